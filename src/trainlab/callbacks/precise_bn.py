"""Precise BatchNorm (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", Sec. 3).

BatchNorm's running averages mix statistics of many past models: the one from k steps ago
still weighs (1 - momentum)^k. When the weights move fast (large learning rate, early
training, short schedules) the averages lag behind the model being evaluated, and validation
accuracy suffers for reasons that have nothing to do with the weights. PreciseBN freezes the
weights and recomputes the population statistics of every BN layer over N training batches:

    mu_pop      = E[x]                     over all values of a channel in those N batches
    sigma2_pop  = E[x^2] - E[x]^2  (times M/(M-1), unbiased, as BN's running_var)

which is the paper's aggregation of per-batch statistics, E[mu_B] and E[mu_B^2 + sigma2_B] -
E[mu_B]^2, computed from pooled sums. The forward passes run in train mode, so every layer
sees its inputs normalised by batch statistics, as in training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from trainlab.layers.traits import keeps_running_stats

log = logging.getLogger(__name__)


class PreciseBN(pl.Callback):
    """Before each validation, recompute every BN layer's running_mean and running_var over
    `num_batches` training batches (fewer if an epoch is shorter).

    Works with every layer that keeps running statistics (trainlab.layers.traits.keeps_running_stats:
    torch's BatchNorm, trainlab's BatchNormScratch and GhostBatchNorm, a user's BN-like norm);
    layers without them (track_running_stats=False) are left alone, and so are the layers whose
    statistics a callback holds fixed (`frozen_norm_layers(pl_module)`: the transfer policy's
    frozen stages with freeze_bn_stats), which stay in eval mode during the passes as in
    training. The training batches come from a fresh training loader (the datamodule's, else
    the trainer's), and the model is called on the batch's first element (the inputs). Under DDP
    the sums are added over all processes, so every rank gets the same statistics.
    """

    def __init__(self, num_batches: int = 200) -> None:
        if num_batches < 1:
            raise ValueError(f"callbacks.precise_bn.num_batches={num_batches} must be a positive integer.")
        self.num_batches = num_batches
        self._warned = False

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        limit = trainer.num_training_batches
        num_batches = self.num_batches if math.isinf(limit) else min(self.num_batches, int(limit))
        if not any(keeps_running_stats(m) for m in pl_module.modules()):
            if not self._warned:
                log.warning(
                    "PreciseBN: the model has no BatchNorm layer with running statistics; nothing to do."
                )
                self._warned = True
            return
        fixed = [
            m
            for c in trainer.callbacks
            if hasattr(c, "frozen_norm_layers")
            for m in c.frozen_norm_layers(pl_module)
        ]
        recompute_bn_stats(pl_module, self._batches(trainer, pl_module, num_batches), trainer, fixed=fixed)

    def _batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule, num_batches: int):
        # A fresh loader: re-iterating the one the fit loop is using would reset it mid-epoch
        # when it has persistent workers.
        datamodule = trainer.datamodule
        loader = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
        if isinstance(loader, Mapping):
            loader = next(iter(loader.values()))
        elif isinstance(loader, Sequence):
            loader = loader[0]
        for index, batch in enumerate(loader):
            if index == num_batches:
                return
            batch = trainer.strategy.batch_to_device(batch, pl_module.device)
            yield batch[0] if isinstance(batch, list | tuple) else batch


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module, inputs, trainer: pl.Trainer | None = None, fixed: Sequence[nn.Module] = ()
) -> int:
    """Set the running statistics of every BN layer in `model` to the population statistics of
    its inputs over the batches in `inputs` (an iterable of model inputs); the layers in `fixed`
    keep theirs and normalise with them (eval mode). Returns the number of batches used. The
    model's parameters and train/eval modes are left as they were."""
    fixed = set(fixed)
    layers = [m for m in model.modules() if keeps_running_stats(m) and m not in fixed]
    if not layers:
        return 0
    sums: dict[nn.Module, list] = {m: [0, 0.0, 0.0] for m in layers}  # count, sum x, sum x^2

    def accumulate(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().double()  # float64: E[x^2] - E[x]^2 cancels badly in float32
        dims = [0, *range(2, x.dim())]
        entry = sums[module]
        entry[0] += x.numel() // x.size(1)
        entry[1] = entry[1] + x.sum(dims)
        entry[2] = entry[2] + x.square().sum(dims)

    modes = {m: m.training for m in model.modules()}
    tracked = {
        m: m.num_batches_tracked.clone()
        for m in layers
        if getattr(m, "num_batches_tracked", None) is not None
    }
    handles = [m.register_forward_pre_hook(accumulate) for m in layers]
    num_batches = 0
    try:
        model.train()
        for module in fixed:  # frozen statistics, used as in training
            module.eval()
        # a compiled network (compile=true) runs eagerly here: compiled, its hooked float64
        # passes would be compiled as graphs of their own, once per run, for a few batches
        with torch.compiler.set_stance("force_eager"):
            for batch in inputs:
                with trainer.precision_plugin.forward_context() if trainer else nullcontext():
                    model(batch)
                num_batches += 1
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.train(training)
    if num_batches == 0:
        log.warning("PreciseBN: no training batches, BN statistics left as they were.")
        return 0
    for module in layers:
        count, total, total_sq = _all_reduce(sums[module], trainer)
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0) * (count / max(count - 1, 1))
        module.running_mean.copy_(mean)
        module.running_var.copy_(var)
        if module in tracked:  # the layer saw no new training batches
            module.num_batches_tracked.copy_(tracked[module])
    return num_batches


def _all_reduce(entry: list, trainer: pl.Trainer | None) -> tuple[float, Tensor, Tensor]:
    count, total, total_sq = entry
    if trainer is None or trainer.world_size == 1:
        return count, total, total_sq
    packed = torch.cat([total.new_tensor([count]), total, total_sq])
    packed = trainer.strategy.reduce(packed, reduce_op="sum")
    channels = total.numel()
    return packed[0].item(), packed[1 : 1 + channels], packed[1 + channels :]
