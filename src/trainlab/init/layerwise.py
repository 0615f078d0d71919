"""Greedy layer-wise unsupervised pretraining (Hinton & Salakhutdinov 2006; with autoencoders as
in Bengio et al. 2007): a data-driven scheme that trains each hidden layer before the real run."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.init.core import check_positive, first_inputs, set_biases
from trainlab.layers.hooks import batch_inputs, capture, device_of
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)


def hidden_layers(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The units pretrained one after the other: the children of `network.blocks` that have
    trainable parameters (mlp: each hidden layer; cnn: each conv block; resnet: the stem, then each
    residual block). Parameter-free children (pooling) stay part of the frozen stack below."""
    blocks = getattr(network, "blocks", None)
    layers = (
        [
            (f"blocks.{n}", m)
            for n, m in blocks.named_children()
            if any(p.requires_grad for p in m.parameters())
        ]
        if isinstance(blocks, nn.Module)
        else []
    )
    if not layers:
        raise ConfigError(
            f"init=layerwise_pretrain needs a network whose hidden layers are its `blocks` "
            f"(model=mlp with depth >= 1, cnn or resnet); {type(network).__name__} has none."
        )
    return layers


def decoder_for(hidden: torch.Tensor, code: torch.Tensor) -> nn.Module:
    """A layer mapping the layer's output (`code`) back to the shape of its input (`hidden`)."""
    if hidden.dim() == 2 and code.dim() == 2:
        return nn.Linear(code.shape[1], hidden.shape[1])
    if hidden.dim() == 4 and code.dim() == 4:
        conv = nn.Conv2d(code.shape[1], hidden.shape[1], 3, padding=1)
        if code.shape[2:] == hidden.shape[2:]:
            return conv
        return nn.Sequential(nn.Upsample(size=tuple(hidden.shape[2:]), mode="nearest"), conv)
    raise ConfigError(
        f"init=layerwise_pretrain: no decoder from shape {tuple(code.shape)} back to {tuple(hidden.shape)}."
    )


def layerwise_pretrain(
    network: nn.Module,
    batches: Iterable,
    epochs: int = 1,
    lr: float = 1e-3,
    max_batches: int | None = None,
    bias: float = 0.0,
    device: str | None = None,
) -> dict[str, float]:
    """Train each hidden layer as the encoder of an autoencoder on the frozen layers below it.

    For each hidden layer in turn (see `hidden_layers`): its input h is the output of the frozen
    layers below on a training batch; a new decoder (a linear layer, or a 3x3 conv after
    upsampling to h's size) is trained with the layer to minimise the reconstruction error
    ||decoder(layer(h)) - h||^2 (Adam, `lr`) for `epochs` passes over the training data (at most
    `max_batches` batches each); the decoder is then dropped and the layer keeps its trained
    weights. The head keeps its initial weights: supervised training starts there.

    Hinton & Salakhutdinov stacked RBMs; here each layer is an autoencoder (the greedy scheme of
    Bengio et al. 2007), which fits any block with a decoder of the right shape. Nothing is kept
    constant by formula: the layers start where they describe their input well.

    Logs each layer's mean reconstruction loss per epoch and returns, per layer,
    `<layer>/recon_loss_before` and `<layer>/recon_loss_after` (measured on the first batch before
    and after training) and `<layer>/recon_loss_epoch<k>`. `device`: where to train (e.g. cuda);
    the network is moved back afterwards.
    """
    if epochs < 1:
        raise ConfigError(f"init.epochs={epochs!r} must be >= 1 (epochs of training per layer).")
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"init.max_batches={max_batches!r} must be >= 1, or null for whole epochs.")
    check_positive("init.lr", lr)
    set_biases(network, bias)
    home = device_of(network)
    where = torch.device(device) if device else home
    network.to(where)
    was_training = network.training
    network.train()
    probe = first_inputs(batches, where)
    stats: dict[str, float] = {}
    try:
        for name, layer in hidden_layers(network):
            with torch.no_grad():
                hidden = capture(network, layer, probe, what="input")
                decoder = decoder_for(hidden, layer(hidden)).to(where)

            def reconstruction_loss(h: torch.Tensor, layer=layer, decoder=decoder) -> torch.Tensor:
                return F.mse_loss(decoder(layer(h)), h)

            with torch.no_grad():
                stats[f"{name}/recon_loss_before"] = reconstruction_loss(hidden).item()
            parameters = [p for p in (*layer.parameters(), *decoder.parameters()) if p.requires_grad]
            optimizer = torch.optim.Adam(parameters, lr=lr)
            for epoch in range(1, epochs + 1):
                total, count = 0.0, 0
                for batch in islice(batches, max_batches):
                    with torch.no_grad():  # the layers below are frozen
                        h = capture(network, layer, batch_inputs(batch).to(where), what="input")
                    loss = reconstruction_loss(h)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total, count = total + loss.item() * len(h), count + len(h)
                stats[f"{name}/recon_loss_epoch{epoch}"] = total / max(count, 1)
                log.info(
                    f"layerwise_pretrain: {name} epoch {epoch}/{epochs} reconstruction loss {total / max(count, 1):.4f}"
                )
            with torch.no_grad():
                stats[f"{name}/recon_loss_after"] = reconstruction_loss(hidden).item()
            log.info(
                f"layerwise_pretrain: {name} reconstruction loss {stats[f'{name}/recon_loss_before']:.4f} "
                f"-> {stats[f'{name}/recon_loss_after']:.4f}"
            )
    finally:
        network.to(home)
        network.train(was_training)
    return stats
