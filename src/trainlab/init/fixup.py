"""Fixup (Zhang, Dauphin & Ma 2019, "Fixup initialization: residual learning without
normalization"): trains deep residual networks without normalisation layers."""

from __future__ import annotations

import logging

import torch
from torch import nn

from trainlab.init.core import check_choice
from trainlab.init.schemes import FanMode, kaiming_normal
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)


def residual_blocks(network: nn.Module) -> list[nn.Module]:
    """Modules that declare a residual branch: `branch_layers()` (the branch's weight layers, input
    to output) plus the parameters `fixup_scale` and `fixup_biases` (trainlab.models.resnet's
    ResidualBlock; any residual block with these joins Fixup)."""
    return [m for m in network.modules() if callable(getattr(m, "branch_layers", None))]


def classifier_layer(network: nn.Module) -> nn.Linear:
    """The final classification layer: `network.head`, else the last Linear layer."""
    head = getattr(network, "head", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"init=fixup: {type(network).__name__} has no Linear classification layer.")
    return linears[-1]


def fixup(
    network: nn.Module, mode: FanMode = "fan_out", nonlinearity: str = "auto", bias: float = 0.0
) -> None:
    """The three rules of Fixup (section 3 of the paper), for L residual branches of m layers:

    1. the classification layer and the last layer of each residual branch start at 0 (weights
       and biases), so that every block is the identity and the network's output is 0;
    2. every other layer gets He's init N(0, gain**2 / fan) (`mode` fan_out as in the authors'
       code, or fan_in), and the layers inside residual branches are scaled by L^(-1/(2m-2))
       (L^(-1/2) for two-conv blocks): the branches' sum then changes the output by O(1) per SGD
       step whatever the depth, the update-scale argument of the paper;
    3. a scalar multiplier (1) and scalar biases (0) in every branch, trainable.

    Fixup replaces normalisation: use it with `norm=none` (norm layers are kept, with a warning).
    A network without residual branches is an error: use model=resnet.
    """
    check_choice("init.mode", mode, ("fan_in", "fan_out"))
    blocks = residual_blocks(network)
    if not blocks:
        raise ConfigError(
            f"init=fixup needs a residual network; {type(network).__name__} has no residual branches. "
            f"Use model=resnet (with norm=none), or another init."
        )
    if any(getattr(block, "has_norm", False) for block in blocks):
        log.warning(
            "init=fixup on a network with normalisation layers: Fixup is meant to replace them (norm=none)."
        )
    kaiming_normal(network, mode=mode, nonlinearity=nonlinearity, bias=bias)
    depth = len(blocks)
    with torch.no_grad():
        for block in blocks:
            layers = list(block.branch_layers())
            if len(layers) < 2:
                raise ConfigError(
                    f"init=fixup: {type(block).__name__}'s branch has {len(layers)} layer(s); Fixup's "
                    f"scaling L^(-1/(2m-2)) needs m >= 2."
                )
            factor = depth ** (-1.0 / (2 * len(layers) - 2))
            for layer in layers[:-1]:
                layer.weight.mul_(factor)
            last = layers[-1]
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()
            block.fixup_scale.fill_(1.0)
            block.fixup_scale.requires_grad_(True)
            for scalar in block.fixup_biases:
                scalar.zero_()
                scalar.requires_grad_(True)
        head = classifier_layer(network)
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    log.info(f"fixup: {depth} residual branches, branch layers scaled by L^(-1/(2m-2)) with L={depth}")
