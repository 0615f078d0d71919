"""A resumed run trains with the settings its config records, not silently with the checkpoint's.

Lightning restores the optimizer and the learning-rate schedule from the checkpoint, their
settings included: `ckpt_path=last optimizer.lr=0.1` would train with the checkpoint's rate while
the run's `.hydra/config.yaml` says 0.1. The schedule is rebuilt for this run's length (the module's
`configure_optimizers` sizes it by `trainer.estimated_stepping_batches`), but the first resumed step
would still use the restored rate: after a finished cosine run, 0.0.

What a resume with changed settings does (docs/runs.md, "Resume with other settings"):
- optimizer settings (`optimizer.lr`, `weight_decay`, `momentum`, `betas`, `eps`, ...) are applied
  to the restored optimizer: a new `lr` scales every parameter group's rate and the schedule's base
  rates by new/old, so each group keeps its rate relative to optimizer.lr (`lr_mult`: the transfer
  policy's backbone and layer-wise rates); any other setting replaces the checkpoint's value in
  every group that had it (a group with a value of its own, e.g. no weight decay on norms, keeps
  its own). Another optimizer class is refused before the run starts
  (trainlab.checkpoints.resume_check).
- a changed length (`trainer.max_epochs`, `trainer.max_steps`, or the epoch's number of batches)
  or schedule (`scheduler=...`, `scheduler.*`): the schedule is that of a run planned for this
  run's length, from the step the checkpoint reached on, the first resumed step included; e.g. a
  finished 15-epoch cosine run resumed with max_epochs=30 continues at the rate a 30-epoch run has
  at epoch 15, and decays to the end of epoch 30. With `scheduler=none` the rate is optimizer.lr
  (times each group's lr_mult) from then on. A length shorter than the checkpoint's progress is
  refused before the run starts (trainlab.checkpoints.resume_check).
Each change is named in an info line. With nothing changed the rates are those the checkpoint
holds (an interrupted run resumes exactly).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "trainlab_schedule"  # {"total_steps": the length the checkpoint's run was planned for}
NOT_SETTINGS = ("_target_", "_partial_")  # which optimizer: checked before the run starts


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def changed_settings(stored: Mapping | None, current: Mapping | None) -> dict[str, tuple[Any, Any]]:
    """{key: (the checkpoint's value, this run's)} of the optimizer settings that differ."""
    stored, current = stored or {}, current or {}
    return {
        key: (stored.get(key), current[key])
        for key in current
        if key not in NOT_SETTINGS and not _same(stored.get(key), current[key])
    }


def _as_group_value(value: Any, like: Any) -> Any:
    return tuple(value) if isinstance(like, tuple) and isinstance(value, list) else value


def apply_settings(trainer: pl.Trainer, changes: dict[str, tuple[Any, Any]]) -> None:
    """Set the changed optimizer settings in the restored optimizers and schedules (see above)."""
    schedules = {id(c.scheduler.optimizer): c.scheduler for c in trainer.lr_scheduler_configs}
    for optimizer in trainer.optimizers:
        schedule = schedules.get(id(optimizer))
        for key, (old, new) in changes.items():
            if key == "lr":
                _scale_rates(optimizer, schedule, old, new)
                continue
            for group in optimizer.param_groups:
                if key in group and (old is None or _same(group[key], old)):
                    group[key] = _as_group_value(new, group[key])


def _scale_rates(optimizer: Any, schedule: Any, old: float | None, new: float) -> None:
    """Every group's rate (and the schedule's base rate of it) times new/old; from a rate of 0,
    the new rate times the group's `lr_mult`."""
    bases = list(getattr(schedule, "base_lrs", []) or [])
    for index, group in enumerate(optimizer.param_groups):

        def scaled(rate: float, group: dict = group) -> float:
            return rate * new / old if old else new * group.get("lr_mult", 1.0)

        if index < len(bases):
            bases[index] = scaled(bases[index])
        if "initial_lr" in group:
            group["initial_lr"] = scaled(group["initial_lr"])
        group["lr"] = scaled(group["lr"])
    if bases:
        schedule.base_lrs = bases


def follow_schedule(trainer: pl.Trainer, restored_schedules: int) -> list[tuple[float, float]]:
    """Set each group's rate to what this run's schedule gives at the current step (what the
    schedule's own step sets after every optimizer step); [(restored rate, rate now)] of each.

    A schedule the checkpoint had no state for (`restored_schedules`: how many it had) starts at
    the current step, not at 0; an optimizer this run schedules no longer runs at its base rate."""
    moved = []
    scheduled = {id(config.scheduler.optimizer) for config in trainer.lr_scheduler_configs}
    for optimizer in trainer.optimizers:
        if id(optimizer) not in scheduled:  # the checkpoint's schedule left its rate, not optimizer.lr
            for group in optimizer.param_groups:
                if "initial_lr" in group:
                    before, group["lr"] = group["lr"], group["initial_lr"]
                    moved.append((float(before), float(group["lr"])))
    for index, config in enumerate(trainer.lr_scheduler_configs):
        schedule = config.scheduler
        if not isinstance(schedule, LambdaLR):  # trainlab's schedules; others keep their restored rate
            continue
        if index >= restored_schedules and config.interval == "step":
            schedule.last_epoch = trainer.global_step
        groups = schedule.optimizer.param_groups
        for group, base, factor in zip(groups, schedule.base_lrs, schedule.lr_lambdas, strict=False):
            before, group["lr"] = group["lr"], base * factor(schedule.last_epoch)
            moved.append((float(before), float(group["lr"])))
    return moved


class ResumedSettings(pl.Callback):
    """Applies, when a resumed fit starts training, the optimizer settings and the schedule length
    of this run's config to the optimizer and schedule restored from the checkpoint (see above).
    Added by trainlab.builders.build_trainer to every trainer: not a study's choice."""

    def __init__(self) -> None:
        self._stored_optimizer: Mapping | None = None
        self._planned_steps: int | None = None
        self._restored_schedules = 0
        self._resumed = False
        self._total_steps: int | float | None = None  # this run's length, known once training starts

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._total_steps is not None:
            checkpoint[CHECKPOINT_KEY] = {"total_steps": self._total_steps}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self._resumed = True
        self._stored_optimizer = (checkpoint.get("hyper_parameters") or {}).get("optimizer")
        self._planned_steps = (checkpoint.get(CHECKPOINT_KEY) or {}).get("total_steps")
        self._restored_schedules = len(checkpoint.get("lr_schedulers") or [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # here: after Lightning restored the optimizer and schedule (after on_fit_start)
        self._total_steps = _total_steps(trainer) if trainer.lr_scheduler_configs else None
        if not self._resumed:
            return
        self._resumed = False
        current = (getattr(pl_module, "hparams", None) or {}).get("optimizer")
        changes = changed_settings(self._stored_optimizer, current) if self._stored_optimizer else {}
        for key, (old, new) in changes.items():
            log.info(f"Resumed with optimizer.{key}={new!r} (the checkpoint's run had {old!r}): applied.")
        apply_settings(trainer, changes)
        moved = follow_schedule(trainer, self._restored_schedules)
        total, planned = self._total_steps, self._planned_steps
        if moved and total is None:
            log.info(
                f"Resumed at step {trainer.global_step} without a schedule: the learning rate is "
                f"optimizer.lr from here on, now {moved[0][1]:.4g} (the checkpoint's {moved[0][0]:.4g})."
            )
        elif moved and (planned not in (None, total) or any(not _close(a, b) for a, b in moved)):
            was = (
                f"the checkpoint's run was planned for {planned}"
                if planned
                else "the checkpoint's schedule differs"
            )
            log.info(
                f"Resumed at step {trainer.global_step} with a schedule for {total} optimizer steps ({was}): "
                f"from here on the learning rate is a {total}-step run's, now {moved[0][1]:.4g} "
                f"(the checkpoint's {moved[0][0]:.4g})."
            )


def _total_steps(trainer: pl.Trainer) -> int | float:
    total = trainer.estimated_stepping_batches
    return int(total) if total != float("inf") else total


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1.0)
