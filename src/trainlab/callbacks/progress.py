"""Lightning's Rich progress bar, redrawn a few times a second and reading the metrics it shows
only on logging steps: no host sync, and next to no host work, on the other training steps."""

from __future__ import annotations

import time
from collections.abc import Sequence

from lightning.pytorch.callbacks import RichProgressBar

from trainlab.utils.logging_steps import is_logging_step


class ThrottledRichProgressBar(RichProgressBar):
    """`lightning.pytorch.callbacks.RichProgressBar` that updates its display at most
    `redraws_per_second` times a second and reads the metrics it shows on logging steps only.

    Lightning's bar, after every training batch, updates Rich's task, converts every metric it
    shows to a Python float (`Tensor.item()`: a host-device synchronisation per step on a GPU) and
    asks for a redraw; its thread redraws up to `refresh_rate` times a second. This one:

    - reads the metrics on the logging steps (`trainer.log_every_n_steps`), the only training
      steps on which the module logs new ones, and outside training batches (validation, epoch
      ends), so the numbers left on screen at the end of an epoch are that epoch's;
    - shows `step_metrics`, metrics logged on the training step without `prog_bar` (Lightning
      converts a step's `prog_bar` values to floats after every batch until the epoch ends, a
      host sync per step on a GPU), from the trainer's callback metrics, read on logging steps;
    - passes a training batch on to Lightning's bar (Rich's task update) on logging steps, on the
      epoch's last batch and when a redraw is due, and asks for a redraw at most
      `redraws_per_second` times a second.

    Args:
        refresh_rate: Lightning's: how often (per second) its redraw thread looks for a redraw
            asked for; also the longest the end of each stage (fit, test) waits for that thread
            (1 / refresh_rate s). 0 turns the bar off.
        redraws_per_second: how often the display changes at most.
        step_metrics: names of step metrics to show (the Classifier's `train/loss_step`).
        leave, theme, console_kwargs: Lightning's.
    """

    def __init__(
        self,
        refresh_rate: int = 100,
        redraws_per_second: float = 4.0,
        step_metrics: Sequence[str] = ("train/loss_step",),
        **kwargs,
    ) -> None:
        if redraws_per_second <= 0:
            raise ValueError(
                f"callbacks.rich_progress_bar.redraws_per_second must be > 0, got {redraws_per_second} "
                "(refresh_rate=0 turns the bar off)."
            )
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.redraw_interval = 1.0 / redraws_per_second
        self.step_metrics = tuple(step_metrics)
        self._step_values: dict[str, float] = {}
        self._redrawn_at = -float("inf")
        self._logging_step = False
        self._in_train_batch_end = False
        self._metrics: dict | None = None

    def _redraw_due(self) -> bool:
        return time.monotonic() - self._redrawn_at >= self.redraw_interval

    def refresh(self, hard: bool = False) -> None:
        if hard or self._redraw_due():
            self._redrawn_at = time.monotonic()
            super().refresh(hard=hard)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._logging_step = is_logging_step(trainer)  # asked before the optimizer step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        last = batch_idx + 1 >= self.total_train_batches
        if not (self._logging_step or last or self._redraw_due()):
            return
        self._in_train_batch_end = True
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._in_train_batch_end = False

    def get_metrics(self, trainer, pl_module) -> dict:
        if not self._in_train_batch_end or self._logging_step:
            if self._in_train_batch_end:
                logged = trainer.callback_metrics
                self._step_values.update(
                    {name: float(logged[name]) for name in self.step_metrics if name in logged}
                )
            self._metrics = {**super().get_metrics(trainer, pl_module), **self._step_values}
        return self._metrics or {}  # before the first logging step of a fit: nothing read yet
