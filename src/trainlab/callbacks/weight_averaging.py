"""Weight averaging on Lightning's callbacks: EMA (`callbacks=ema`) and SWA (`callbacks=swa`).

- `EMA` is Lightning's `EMAWeightAveraging`: the average is swapped in for every validation,
  and every checkpoint's `state_dict` holds the averaged weights (the raw ones under
  `current_model_state`), so the best checkpoint that the test loads is the averaged model.
- `SWA` is Lightning's `StochasticWeightAveraging` (Izmailov et al. 2018): from
  `swa_epoch_start` the learning rate follows SWALR (annealed to `swa_lrs`, per epoch) and the
  weights are averaged once per epoch. Lightning validates and checkpoints the raw weights and
  puts the average into the model only when fit ends (after one more epoch that recomputes
  BatchNorm statistics), so this callback then saves `checkpoints/swa.ckpt` and tells the run to
  test it (`checkpoint_to_test`, trainlab.run.lifecycle's `ChoosesTestedCheckpoint`).

Both name what they did in summary.json (`weight_averaging`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)


class EMA(EMAWeightAveraging):
    """Lightning's EMA of the weights (and buffers), updated after every optimizer step."""

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self.decay = decay

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning restores the raw weights (current_model_state) whenever its average exists,
        # which after fit includes the test of the best checkpoint: only resuming fit wants them.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        """summary.json: validation, checkpoints and test used the EMA weights."""
        return {"weight_averaging": {"method": "ema", "decay": self.decay, "evaluated": "averaged"}}


class SWA(StochasticWeightAveraging):
    """Lightning's SWA; the step-wise schedule ends where SWA begins, the average is tested.

    trainlab's schedules step every batch; SWALR steps every epoch. From `swa_epoch_start` on,
    SWALR replaces the schedule (Lightning would swap it too, with a warning that the old one
    was per step); each parameter group's SWA rate keeps its `lr_mult` (transfer policies).
    """

    def __init__(self, swa_lrs: float, filename: str = "swa.ckpt", **kwargs: Any) -> None:
        super().__init__(swa_lrs=float(swa_lrs), **kwargs)
        self.filename = filename
        self.saved_path: Path | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._initialized and self.swa_start <= trainer.current_epoch <= self.swa_end:
            if isinstance(self._swa_lrs, float):
                groups = trainer.optimizers[0].param_groups
                self._swa_lrs = [self._swa_lrs * g.get("lr_mult", 1.0) for g in groups]
            if trainer.lr_scheduler_configs:
                log.info(
                    f"SWA from epoch {trainer.current_epoch}: SWALR replaces the learning-rate schedule."
                )
                trainer.lr_scheduler_configs.clear()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the average is now the model's weights
        dirpath = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        if self.n_averaged is None or dirpath is None or trainer.interrupted:
            return
        self.saved_path = Path(dirpath) / self.filename
        trainer.save_checkpoint(self.saved_path)

    def checkpoint_to_test(self, trainer: pl.Trainer) -> Path | None:
        """The averaged weights' checkpoint: the average is not in any checkpoint the run's
        ModelCheckpoint saved (None when nothing was averaged or the fit was stopped)."""
        return self.saved_path

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        """summary.json: how many epochs were averaged and the checkpoint holding the average."""
        if self.n_averaged is None:
            return {"weight_averaging": {"method": "swa", "n_averaged": 0, "evaluated": "raw"}}
        return {
            "weight_averaging": {
                "method": "swa",
                "n_averaged": int(self.n_averaged),
                "swa_epoch_start": self._swa_epoch_start,
                "evaluated": "averaged",
                "checkpoint": str(self.saved_path) if self.saved_path else None,
            }
        }
