"""A vectorised group: the jobs of a multirun that train as one stacked network, each still a run.

The launcher (hydra_plugins.trainlab_launchers.vectorised_launcher) hands each member's job to
`GroupTraining.join` inside Hydra's own job set-up (its directory, `.hydra/` files, log file), as it
would hand an ordinary job to `trainlab.train.train`. `join` does what `train` does before the fit,
for that member: the run's lifecycle (lock, `running` record, seed), the config checks, the data,
the network and its init scheme, the loggers. `train` then fits all members at once in one Trainer
(trainlab.vectorised.module), tests each member's best checkpoint, and ends each member's lifecycle
with its own outcome. A member that fails to build fails alone; the others train.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab import builders, checks
from trainlab.data.datamodule import ImageDataModule
from trainlab.models.classifier import Classifier
from trainlab.run.lifecycle import Run, run_lifecycle
from trainlab.utils.config import ConfigError, require_values
from trainlab.vectorised.batches import stacked_train_loader
from trainlab.vectorised.members import (
    MemberCheckpointIO,
    MemberCheckpoints,
    MemberLoggers,
    MemberView,
)
from trainlab.vectorised.module import VectorisedClassifier

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One job of the group: its config, its open lifecycle and what was built for it."""

    cfg: DictConfig
    lifecycle: Any  # the run's lifecycle context manager, entered by `join`, exited by `train`
    run: Run
    datamodule: ImageDataModule
    model: Classifier
    loggers: list = field(default_factory=list)
    view: MemberView | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)


class GroupTraining:
    """Collects the members (`join`, one call per job), then trains them as one (`train`).
    `exact`: the stacked network's and optimizer's mode (None: exact on the CPU, fast on a GPU)."""

    def __init__(self, exact: bool | None = None) -> None:
        self.exact = exact
        self.members: list[Member] = []
        self.joined: list[Member | None] = []  # per job, in the order they joined (None: done already)

    # --- one job: build its member ------------------------------------------------------------
    def join(self, cfg: DictConfig) -> None:
        """Hydra's task function for one member's job: everything `trainlab.train.train` does
        before the fit. The run's lifecycle stays open until `train` ends it."""
        self.joined.append(None)  # this job's entry, the member once it joined
        cfg = _resolved(cfg)  # its directory and interpolations now, while Hydra's config is the job's
        if OmegaConf.select(cfg, "logger.wandb") is not None:
            with open_dict(cfg):  # W&B runs of the members side by side in one process
                cfg.logger.wandb.reinit = "create_new"
        lifecycle = run_lifecycle(cfg)
        run = lifecycle.__enter__()
        if run.skipped:  # completed before (skip_completed), or another process writes there
            lifecycle.__exit__(None, None, None)
            return
        try:
            require_values(cfg)
            checks.check_config(cfg)
            checkpoint = run.begin(builders.resolve_checkpoint(cfg, run.output_dir))  # seeds: as a job does
            if checkpoint is not None:
                raise ConfigError(
                    f"this job resumes {checkpoint}: a vectorised group starts its members from scratch. "
                    "Resume it without hydra/launcher=vectorised (its checkpoint is an ordinary one)."
                )
            datamodule = builders.build_datamodule(cfg)
            # the seed that orders and augments its data: torch's initial seed is one per process
            datamodule.set_data_seed(torch.initial_seed())
            model, built = builders.build_model(cfg, datamodule)
            run.record_built(built, datamodule.num_classes)
            loggers = run.track_loggers(builders.build_loggers(cfg, resume_from=None))
        except BaseException:
            if not lifecycle.__exit__(*sys.exc_info()):
                raise
            return
        member = Member(cfg, lifecycle, run, datamodule, model, loggers)
        self.members.append(member)
        self.joined[-1] = member

    # --- all jobs: one fit --------------------------------------------------------------------
    def train(self) -> list[dict[str, Any] | None]:
        """Fit and test the members as one; end each member's run. Returns each joined job's
        record (None for a job that did not join: its record was written already)."""
        stopped: BaseException | None = None
        if self.members:
            log.info(
                f"Vectorised group: {len(self.members)} members trained as one network "
                f"({', '.join(str(m.run.output_dir.name) for m in self.members)})."
            )
            try:
                self._fit_and_test()
                error = None
            except BaseException as raised:  # every member's record gets the outcome
                error = raised
            # last joined, first ended: each lifecycle restores what it replaced on entry
            for member in reversed(self.members):
                stopped = _end(member, error) or stopped
        if stopped is not None:
            raise stopped
        return [member.run.record if member else None for member in self.joined]

    def _fit_and_test(self) -> None:
        members = self.members
        first = members[0].cfg
        module = VectorisedClassifier(
            [m.model for m in members], normalise=members[0].datamodule.network_input, exact=self.exact
        )
        checkpoint_io = MemberCheckpointIO(lambda k: self._extra_checkpoint_entries(members[k]))
        bar = (OmegaConf.select(first, "callbacks.rich_progress_bar") or {}).get("_target_")
        callbacks: list[pl.Callback] = [instantiate(first.callbacks.rich_progress_bar)] if bar else []
        trainer_cfg = OmegaConf.to_container(first.trainer, resolve=True)
        trainer_cfg.pop("_target_", None)
        trainer_cfg.update(
            enable_checkpointing=False, enable_progress_bar=bool(bar), enable_model_summary=False
        )
        member_loggers = MemberLoggers([m.loggers for m in members])
        trainer = pl.Trainer(
            **trainer_cfg, callbacks=callbacks, logger=member_loggers, plugins=[checkpoint_io]
        )
        checkpoint_io.module = module
        for k, member in enumerate(members):
            member.view = MemberView(trainer, k, member.run.output_dir, member.datamodule, member.loggers)
            member.callbacks = _member_callbacks(member.cfg)
            member.view.callbacks = [c for c in member.callbacks.values() if c is not None]
            member.view.callbacks.append(_TransferRecord(member.model))
            member.view.checkpoint_callback = member.callbacks.get("model_checkpoint")
            member.run.track(member.view)
        views = [m.view for m in members]
        checkpoints = MemberCheckpoints(
            views,
            [m.callbacks.get("model_checkpoint") for m in members],
            [m.callbacks.get("last_checkpoint") for m in members],
            [_interrupt_path(m) for m in members],
        )
        for member in members:  # where an interrupted member resumes from, as InterruptCheckpoint says
            member.view.callbacks.append(_InterruptRecord(checkpoints, member.view.k))
        member_loggers.counting = lambda k: views[k].stopped_at is None
        throughput = OmegaConf.select(first, "callbacks.throughput")
        if throughput and throughput.get("_target_"):
            trainer.callbacks.append(_MemberThroughput(instantiate(throughput)))
        trainer.callbacks.extend(
            [
                checkpoints,
                _MemberEpochs(members),
                _MemberLayerStats(members),
            ]
        )
        for member in members:  # what an ordinary run's transfer policy logs at the start
            for logger in member.loggers:
                logger.log_metrics(_TransferRecord(member.model).metrics(), step=0)

        for member in members:  # pin_memory=null and the epoch follow the trainer, as in a job
            member.datamodule.trainer = trainer
        datamodule = members[0].datamodule
        start = time.perf_counter()
        trainer.fit(
            module,
            train_dataloaders=stacked_train_loader([m.datamodule for m in members]),
            val_dataloaders=datamodule.val_dataloader(),
            weights_only=True,
        )
        log.info(f"Vectorised group: fit of {len(members)} members in {time.perf_counter() - start:.2f} s.")
        tested = []
        for k, member in enumerate(members):
            if member.run.fit_ended(member.view) and member.cfg.get("test"):
                chosen = member.run.checkpoint_to_test(member.view)
                if chosen == "best":
                    best = member.callbacks["model_checkpoint"].best_model_path
                    state = torch.load(best, map_location="cpu", weights_only=True)
                    module.load_member_weights(k, state["state_dict"])
                tested.append(k)
        if tested:
            for k in range(module.num_members):  # the others log nothing more
                module.active[k] = k in tested
            trainer.test(module, dataloaders=datamodule.test_dataloader(), weights_only=True)
            for k in tested:
                confusion = members[k].callbacks.get("confusion_matrix")
                if confusion is not None:
                    confusion.on_test_end(members[k].view, module.member_test_metrics(k))

    @staticmethod
    def _extra_checkpoint_entries(member: Member) -> dict[str, Any]:
        """What an ordinary run's checkpoint holds beyond the module: its checkpoint callbacks'
        and divergence guard's states, the DataModule's hyperparameters and training position."""
        states = {
            callback.state_key: callback.state_dict()
            for name, callback in member.callbacks.items()
            if callback is not None and name in ("model_checkpoint", "last_checkpoint", "divergence_guard")
        }
        datamodule = member.datamodule
        return {
            "callbacks": states,
            "datamodule_hparams_name": None,
            "datamodule_hyper_parameters": dict(datamodule.hparams),
            type(datamodule).__qualname__: _datamodule_state(datamodule, member),
        }


def _datamodule_state(datamodule: ImageDataModule, member: Member) -> dict[str, Any]:
    from trainlab.data.sampler import resume_position

    trainer = member.view._trainer
    epoch, batches = resume_position(trainer)
    return {"seed": datamodule.data_seed(), "epoch": epoch, "batches_trained": batches}


class _InterruptRecord:
    """summary.json's `interrupt_checkpoint` of one member, as trainlab's InterruptCheckpoint records it."""

    def __init__(self, checkpoints: MemberCheckpoints, k: int) -> None:
        self.checkpoints, self.k = checkpoints, k

    def summary_items(self, trainer: Any) -> dict[str, Any]:
        saved = self.checkpoints.interrupt_saved.get(self.k)
        return {"interrupt_checkpoint": str(saved)} if saved is not None else {}


class _TransferRecord:
    """What an ordinary run's transfer policy (transfer=scratch) records: nothing frozen."""

    def __init__(self, model: Classifier) -> None:
        self.trainable = sum(p.numel() for p in model.net.parameters())

    def metrics(self) -> dict[str, int]:
        return {"transfer/trainable_params": self.trainable, "transfer/frozen_params": 0}

    def summary_items(self, trainer: Any) -> dict[str, Any]:
        return {"transfer": {"trainable_params": self.trainable, "frozen_params": 0}}


class _MemberEpochs(pl.Callback):
    """Per member, what an ordinary run's callbacks do each step and epoch: the divergence guard
    (which stops the member, not the group), the learning rate at each epoch's start
    (LearningRateMonitor's `lr-<optimizer>`) and the record's heartbeat at each epoch's end."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.heartbeats = [m.run.heartbeat() for m in members]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: VectorisedClassifier) -> None:
        optimizer = trainer.optimizers[0]
        for k, member in enumerate(self.members):
            if member.callbacks.get("lr_monitor") is None or member.view.stopped_at is not None:
                continue
            name = "lr-" + str(member.cfg.optimizer._target_).rsplit(".", 1)[-1]
            groups = optimizer.param_groups
            rates = {
                name if len(groups) == 1 else f"{name}/pg{i + 1}": float(group["lr"][k])
                for i, group in enumerate(groups)
            }
            for logger in member.loggers:
                logger.log_metrics(rates, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module: VectorisedClassifier, outputs, batch, batch_idx) -> None:
        losses = pl_module.last_losses
        for k, member in enumerate(self.members):
            guard = member.callbacks.get("divergence_guard")
            if guard is not None and member.view.stopped_at is None:
                guard.on_train_batch_end(member.view, pl_module, losses[k], batch, batch_idx)
        self._stop_when_all_stopped(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VectorisedClassifier) -> None:
        for member, heartbeat in zip(self.members, self.heartbeats, strict=True):
            guard = member.callbacks.get("divergence_guard")
            if guard is not None and member.view.stopped_at is None:
                guard.on_train_epoch_end(member.view, pl_module)
            if member.view.stopped_at is None:
                heartbeat.on_train_epoch_end(member.view, pl_module)
        self._stop_when_all_stopped(trainer)

    def _stop_when_all_stopped(self, trainer: pl.Trainer) -> None:
        if all(member.view.stopped_at is not None for member in self.members):
            trainer.should_stop = True


class _MemberThroughput(pl.Callback):
    """`train/images_per_sec` of each member (its `callbacks.throughput`): a member trains on
    one member's batch per step, so the callback counts member 0's part of the stacked batch;
    the rate goes to every member that still counts."""

    def __init__(self, callback: pl.Callback) -> None:
        self.callback = callback

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.callback.on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        images, labels = batch
        self.callback.on_train_batch_end(trainer, pl_module, outputs, (images[0], labels[0]), batch_idx)


class _MemberLayerStats(pl.Callback):
    """Each member's layer statistics (its `callbacks.layer_stats`), measured as its ordinary run
    measures them. On a sampled step the member's own network, holding the stack's weights of that
    member, runs the step's forward and backward on the member's batch under the callback's hooks
    (the same activations and gradients as the member's part of the stacked step: vmap's hooks
    would see every member at once); after the group's optimizer step it gets the updated weights
    for the update ratios. Every other hook is the callback's own, called with the member's view."""

    def __init__(self, members: list[Member]) -> None:
        self.members = [(k, m) for k, m in enumerate(members) if m.callbacks.get("layer_stats") is not None]
        self._measured: list[int] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: VectorisedClassifier) -> None:
        for _, member in self.members:
            member.model.to(pl_module.device)
            member.callbacks["layer_stats"].on_fit_start(member.view, member.model)

    def on_train_batch_start(self, trainer, pl_module: VectorisedClassifier, batch, batch_idx: int) -> None:
        images, labels = batch
        self._measured = []
        for k, member in self.members:
            if member.view.stopped_at is not None:
                continue
            stats, model = member.callbacks["layer_stats"], member.model
            sampled = trainer.global_step % stats.every_n_steps == 0
            if sampled:
                model.net.load_state_dict(pl_module.network.member_state_dict(k))
            stats.on_train_batch_start(member.view, model, batch, batch_idx)
            if sampled:
                with torch.enable_grad():
                    model.criterion(model(images[k]), labels[k]).backward()
                stats.on_before_optimizer_step(member.view, model, None)
                model.net.zero_grad(set_to_none=True)
                self._measured.append(k)

    def on_train_batch_end(
        self, trainer, pl_module: VectorisedClassifier, outputs, batch, batch_idx: int
    ) -> None:
        for k, member in self.members:
            if k in self._measured:  # the weights after the update: the update ratios
                member.model.net.load_state_dict(pl_module.network.member_state_dict(k))
            if member.view.stopped_at is None or k in self._measured:
                member.callbacks["layer_stats"].on_train_batch_end(
                    member.view, member.model, outputs, batch, batch_idx
                )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: VectorisedClassifier) -> None:
        for _, member in self.members:
            member.callbacks["layer_stats"].on_train_epoch_end(member.view, member.model)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: VectorisedClassifier) -> None:
        for _, member in self.members:
            member.callbacks["layer_stats"].on_fit_end(member.view, member.model)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for _, member in self.members:
            member.callbacks["layer_stats"].on_exception(member.view, member.model, exception)


# The member callbacks a group runs for each member (the rest of its config's callbacks are
# the group's own: the progress bar) or leaves out, with the reason (docs/vectorised.md).
_PER_MEMBER = (
    "model_checkpoint",
    "last_checkpoint",
    "divergence_guard",
    "lr_monitor",
    "confusion_matrix",
    "layer_stats",
)


def _member_callbacks(cfg: DictConfig) -> dict[str, Any]:
    configs = OmegaConf.to_container(cfg.get("callbacks") or {}, resolve=True)
    return {
        name: instantiate(configs[name]) if (configs.get(name) or {}).get("_target_") else None
        for name in _PER_MEMBER
    }


def _interrupt_path(member: Member) -> Path | None:
    config = OmegaConf.select(member.cfg, "callbacks.interrupt_checkpoint")
    if not config:
        return None
    return Path(config.get("dirpath") or member.run.output_dir / "checkpoints") / config.get(
        "filename", "last.ckpt"
    )


def _end(member: Member, error: BaseException | None) -> BaseException | None:
    """End the member's lifecycle with the group's outcome; return what must be raised on
    (Ctrl-C, SIGTERM) instead of being recorded and swallowed."""
    exc_info = (type(error), error, error.__traceback__) if error is not None else (None, None, None)
    try:
        suppressed = member.lifecycle.__exit__(*exc_info)
    except BaseException as raised:
        return raised
    return error if error is not None and not suppressed else None


def _resolved(cfg: DictConfig) -> DictConfig:
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(resolved, True)
    return resolved
