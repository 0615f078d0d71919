"""Optuna pruning for the jobs of a search (hparams_search=optuna).

After each validation epoch the job reports its `monitor` value to its trial; when the study's
pruner says the trial is clearly worse than earlier ones at that epoch, the fit stops and the
run ends as `pruned`: summary.json says so (with the epoch and the reason), no test runs, the
W&B run is finished without error, and the sweeper tells the study the trial was PRUNED.

Not optuna-integration's PyTorchLightningPruningCallback: it raises TrialPruned inside the fit,
which the run would record as a failure. This one stops the fit the way the divergence guard
does, so the run keeps its checkpoints and summary. Under DDP process 0 reports and decides,
and every process stops together (a process stopping alone would hang the others).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl

from trainlab.run.status import PRUNED

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class OptunaPruning(pl.Callback):
    """Reports `monitor` to trial number `trial` of study `study_name` in `storage` and stops the
    fit when `pruner` prunes it. Does nothing when `trial` is None (a run outside a search).
    `storage` None: the running search's (`hydra.sweeper.storage`, or its sweep directory's
    SQLite file), read from Hydra's config when the fit starts."""

    def __init__(
        self, trial: int | None, monitor: str, study_name: str, storage: str | None = None, pruner: Any = None
    ) -> None:
        self.trial_number = trial
        self.monitor, self.study_name, self.storage, self.pruner = monitor, study_name, storage, pruner
        self.pruned_at_epoch: int | None = None
        self.reason: str | None = None
        self._trial: optuna.trial.Trial | None = None
        self._warned = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.trial_number is not None and trainer.is_global_zero:
            self._trial = self._open_trial()

    def _open_trial(self) -> optuna.trial.Trial:
        import optuna

        from trainlab.search.storage import pruner_or_none, rdb_storage

        storage = rdb_storage(self.storage or _search_storage())
        # the job never samples (its parameters came as overrides): a sampler that reads nothing
        study = optuna.load_study(
            study_name=self.study_name,
            storage=storage,
            pruner=pruner_or_none(self.pruner),
            sampler=optuna.samplers.RandomSampler(),
        )
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(self.trial_number))
        return optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.trial_number is None or self.pruned_at_epoch is not None:
            return
        epoch = trainer.current_epoch
        prune, reason = False, None
        if self._trial is not None:
            score = trainer.callback_metrics.get(self.monitor)
            if score is None:
                if not self._warned:
                    log.warning(f"Optuna pruning: {self.monitor} is not logged; this trial is never pruned.")
                    self._warned = True
            else:
                value = float(score)
                self._trial.report(value, step=epoch)
                prune = self._trial.should_prune()
                reason = (
                    f"pruned by {type(self.pruner).__name__} after epoch {epoch}: {self.monitor} "
                    f"{value:.4g} (optuna trial {self.trial_number})"
                )
        if trainer.world_size > 1:  # process 0 decides for all
            prune, reason = trainer.strategy.broadcast((prune, reason), src=0)
        if prune:
            self.pruned_at_epoch, self.reason = epoch, reason
            trainer.should_stop = True

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        """summary.json's outcome (trainlab.run.summary.SummaryContributor): `pruned`, the epoch
        and the reason; nothing while the trial runs on."""
        if self.pruned_at_epoch is None:
            return {}
        return {"status": PRUNED, "error": self.reason, "pruned_at_epoch": self.pruned_at_epoch}


def _search_storage() -> str:
    from hydra.core.hydra_config import HydraConfig

    from trainlab.search.storage import storage_url

    hydra_cfg = HydraConfig.get()
    return storage_url(hydra_cfg.sweeper.get("storage"), hydra_cfg.sweep.dir)
