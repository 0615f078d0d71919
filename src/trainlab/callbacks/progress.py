"""Lightning's Rich progress bar, without a host sync on every training step."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import rich_progress


class _PromptRefreshThread(rich_progress._RefreshThread):
    """Lightning's redraw thread, ending as soon as it is stopped.

    Lightning's sleeps 1/refresh_per_second between redraws, and the bar joins it at the end of
    every stage: at 4 redraws a second that join waited 0.125 s on average, twice a job (fit and
    test), a tenth of a small study job's own time (scripts/bench/study_overhead.py). This one
    waits on its `done` event instead, as Rich's own redraw thread does."""

    def run(self) -> None:
        while not self.done.wait(1 / self.refresh_per_second):
            if self.refresh_cond:
                with self.live._lock:
                    self.live.refresh()
                self.refresh_cond = False


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

    def _init_progress(self, trainer) -> None:
        super()._init_progress(trainer)
        live = getattr(self.progress, "live", None)
        lightnings = getattr(live, "_refresh_thread", None)
        if type(lightnings) is rich_progress._RefreshThread:  # just started by Lightning
            prompt = _PromptRefreshThread(live, live.refresh_per_second)
            live._refresh_thread = prompt  # the one Lightning's stop() stops and joins
            lightnings.stop()  # ends after its current sleep, without drawing again
            prompt.start()

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
