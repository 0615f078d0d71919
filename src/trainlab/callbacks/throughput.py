"""Training throughput: images per second, to the loggers as `train/images_per_sec`.

Lightning's own `ThroughputMonitor` measures the same, but on every training batch it calls
`torch.cuda.synchronize()` (the host waits for the GPU's queue to drain: a stall per step, which
costs GPU throughput) and updates its counters under inference mode. This callback does on each
batch only what a counter needs (the batch's size added to a sum) and reads the clock only on the
steps whose metrics Lightning sends to the loggers (every `trainer.log_every_n_steps` optimizer
steps). Lightning reads the step loss back to the host on those steps anyway, so every interval
is measured at the same point of the same synchronisation and the GPU's lag behind the host is
the same at both ends; the callback adds no synchronisation of its own and touches no tensor.

What is logged, at each logging step: the images trained on since the previous logging step (or
since the epoch started: validation is not training time), over the wall time since then,
times the number of processes (each trains on its own share of equal batches under DDP): the
throughput of the whole run, data loading, forward, backward and optimizer step included.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import perf_counter
from typing import Any

import lightning.pytorch as pl

METRIC = "train/images_per_sec"


def batch_size(batch: Any) -> int:
    """The number of examples in a batch: the first dimension of its first tensor
    ((images, labels), a dict of tensors, or a tensor)."""
    first = batch
    while isinstance(first, (list, tuple, Mapping)):
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    return len(first)


class ImagesPerSecond(pl.Callback):
    """Logs `train/images_per_sec` at each of Lightning's logging steps (see the module's docstring)."""

    def __init__(self) -> None:
        self._images = 0  # trained on since the clock was last read
        self._start = 0.0  # when it was last read
        self._logged_step = -1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._images = 0
        self._start = perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += batch_size(batch)
        every, step = trainer.log_every_n_steps, trainer.global_step
        # Lightning logs after the optimizer step of every `every`-th step (global_step has counted
        # it by now); batches that only accumulate gradients leave global_step where it was
        if not every or step % every or step == self._logged_step or not trainer.loggers:
            return
        now = perf_counter()
        rate = self._images * trainer.world_size / max(now - self._start, 1e-9)
        for logger in trainer.loggers:
            # Lightning's step axis: the optimizer steps before this one (its row of train/loss_step)
            logger.log_metrics({METRIC: rate}, step=step - 1)
        self._images, self._start, self._logged_step = 0, now, step
