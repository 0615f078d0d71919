"""Lightning's Rich progress bar, without a host sync on every training step."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """`lightning.pytorch.callbacks.RichProgressBar` that reads the metrics it shows at most
    `refresh_rate` times a second during training.

    Lightning's bar converts every metric it shows to a Python float (`Tensor.item()`) after every
    training batch, whatever its refresh rate: a host-device synchronisation per step on a GPU
    (the CPU can no longer queue the next step's kernels while the GPU works) and ~0.2 ms of a
    50 ms CPU step (scripts/bench/overhead.py). The bar only redraws `refresh_rate` times a second
    anyway, so between redraws it keeps showing the values it read last. Outside the training
    batches (validation, epoch ends) it reads them every time, so the numbers left on screen at
    the end of an epoch are that epoch's.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_train_batch_end = False
        self._metrics: dict | None = None
        self._metrics_read_at = -float("inf")

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self._in_train_batch_end = True
        try:
            super().on_train_batch_end(*args, **kwargs)
        finally:
            self._in_train_batch_end = False

    def get_metrics(self, trainer, pl_module) -> dict:
        now = time.monotonic()
        due = now - self._metrics_read_at >= 1.0 / max(self.refresh_rate, 1e-9)
        if self._metrics is None or not self._in_train_batch_end or due:
            self._metrics = super().get_metrics(trainer, pl_module)
            self._metrics_read_at = now
        return self._metrics
