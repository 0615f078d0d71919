"""Save `last.ckpt` when a run is interrupted (Ctrl-C or SIGTERM), so `ckpt_path=last` resumes it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def saves_on_interrupt(trainer: pl.Trainer, exception: BaseException) -> bool:
    """Whether `exception` is a stop (Ctrl-C, SIGTERM) during fit after the sanity check: when a
    resumable last.ckpt is written."""
    if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
        return False
    return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking


class InterruptCheckpoint(pl.Callback):
    """On KeyboardInterrupt or SIGTERM during fit, write `<dirpath>/last.ckpt` before exiting.

    Lightning calls `on_exception` while the trainer still holds the model and optimizer
    state, so the checkpoint resumes exactly from the last finished step. That holds during
    validation inside fit too: the checkpoint records the validation loop mid-way, and
    Lightning's resume runs that validation again and then goes on with the next training
    step, repeating and skipping none (its `restarted_mid_evaluation`). Not during the sanity
    check (no step yet). `dirpath` defaults to the ModelCheckpoint callback's directory.
    The run's summary.json names the file it wrote (`interrupt_checkpoint`).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath, self.filename = dirpath, filename
        self.saved_path: Path | None = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not saves_on_interrupt(trainer, exception):
            return
        dirpath = self.dirpath or (
            trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        )
        if dirpath is None:
            return
        self.saved_path = Path(dirpath) / self.filename
        trainer.save_checkpoint(self.saved_path)
        log.warning(
            f"Interrupted at step {trainer.global_step}: saved {self.saved_path}; resume with ckpt_path=last."
        )

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Where the run can be resumed from, for summary.json (trainlab.run.summary.SummaryContributor)."""
        return {"interrupt_checkpoint": str(self.saved_path)} if self.saved_path is not None else {}
