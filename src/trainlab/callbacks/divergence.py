"""Stop a run whose loss has become NaN/inf (or exploded), so a sweep moves on within steps."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch


class DivergenceGuard(pl.Callback):
    """Watches the training loss; on NaN, inf or a loss above `max_loss`, stops the fit.

    The check accumulates a flag on the loss's device and reads it back only every
    `check_every_n_steps` steps, so it adds no host-device synchronisation to the other steps.
    After a stop, `diverged_at_step` holds the step at which the divergence was seen and
    `reason` says what happened; the training script marks the run `diverged`.
    """

    def __init__(self, check_every_n_steps: int = 5, max_loss: float | None = None) -> None:
        if check_every_n_steps < 1:
            raise ValueError(
                f"callbacks.divergence_guard.check_every_n_steps must be >= 1, got {check_every_n_steps}."
            )
        self.check_every_n_steps = check_every_n_steps
        self.max_loss = math.inf if max_loss is None else float(max_loss)
        self.diverged_at_step: int | None = None
        self.reason: str | None = None
        self._bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        bad = ~torch.isfinite(loss) | (loss > self.max_loss)
        self._bad = bad if self._bad is None else self._bad | bad
        if trainer.global_step % self.check_every_n_steps == 0 and bool(self._bad):
            self.diverged_at_step = int(trainer.global_step)
            value = float(loss)
            self.reason = (
                f"training loss became {value} at step {self.diverged_at_step}"
                if not math.isfinite(value)
                else f"training loss {value:.4g} exceeded max_loss={self.max_loss:g} at step {self.diverged_at_step}"
            )
            trainer.should_stop = True
            self._bad = None
