"""Each member of a vectorised group as an ordinary run: its metrics, loggers, checkpoints and
outcome, read out of the group's one Trainer.

- `MemberView`: what a run's record (trainlab.run.summary, trainlab.run.lifecycle) and trainlab's
  callbacks read from a Trainer, for one member: its steps and epochs, its metrics under the
  Classifier's names, its callbacks, its best checkpoint, its directory and loggers.
- `MemberLoggers`: the group Trainer's one logger; it hands `member3/val/acc` to member 3's
  loggers as `val/acc`, at the step Lightning logs it, and the rest (`epoch`) to every member.
- `MemberCheckpointIO` and `member_checkpoint`: one save of the group writes each member's own
  single-network checkpoint, the checkpoint an ordinary job of its config writes (its weights,
  optimizer and schedule state, hyperparameters, data position), which `trainlab.eval`, resume
  (`ckpt_path`) and `transfer.pretrained_ckpt` read like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from trainlab.callbacks.interrupt_checkpoint import saves_on_interrupt
from trainlab.checkpoints.atomic_io import AtomicCheckpointIO
from trainlab.vectorised.module import VectorisedClassifier, member_prefix
from trainlab.vectorised.optimizers import member_optimizer_state


class MemberView:
    """One member's side of the group's Trainer, as a run's record and callbacks read a Trainer."""

    def __init__(
        self, trainer: pl.Trainer, k: int, output_dir: Path, datamodule: Any, loggers: Sequence
    ) -> None:
        self._trainer, self.k = trainer, k
        self.default_root_dir = str(output_dir)
        self.datamodule = datamodule
        self.loggers = list(loggers)
        self.callbacks: list[Any] = []  # the member's own callbacks (SummaryContributors)
        self.checkpoint_callback: ModelCheckpoint | None = None  # the member's best checkpoint
        self.stopped_at: tuple[int, int] | None = None  # (global step, epoch) where it stopped counting
        self.is_global_zero = True
        self.sanity_checking = False

    # --- counters and metrics: the group's, until the member stopped ----------------------------
    @property
    def global_step(self) -> int:
        return self.stopped_at[0] if self.stopped_at else self._trainer.global_step

    @property
    def current_epoch(self) -> int:
        return self.stopped_at[1] if self.stopped_at else self._trainer.current_epoch

    @property
    def log_every_n_steps(self) -> int:
        return self._trainer.log_every_n_steps

    @property
    def fast_dev_run(self) -> int | bool:
        return self._trainer.fast_dev_run

    @property
    def interrupted(self) -> bool:
        return self._trainer.interrupted

    @property
    def state(self):
        return self._trainer.state

    @property
    def logger(self):
        return self.loggers[0] if self.loggers else None

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        prefix = member_prefix(self.k)
        metrics = self._trainer.callback_metrics
        return {name[len(prefix) :]: value for name, value in metrics.items() if name.startswith(prefix)}

    # --- the divergence guard stops the member, not the group -------------------------------------
    @property
    def should_stop(self) -> bool:
        return self.stopped_at is not None

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        if value and self.stopped_at is None:
            self.stopped_at = (self._trainer.global_step, self._trainer.current_epoch)
            self._trainer.lightning_module.deactivate(self.k)


class MemberLoggers(Logger):
    """The group Trainer's logger: each member's metrics to that member's loggers."""

    def __init__(self, member_loggers: Sequence[Sequence[Logger]]) -> None:
        super().__init__()
        self.member_loggers = [list(loggers) for loggers in member_loggers]
        # whether member k still counts (a member that stopped logs nothing more)
        self.counting: Callable[[int], bool] = lambda k: True

    @property
    def name(self) -> str:
        return "members"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Each member's loggers got their member's config when they were built."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        shared = {name: value for name, value in metrics.items() if not name.startswith("member")}
        for k, loggers in enumerate(self.member_loggers):
            prefix = member_prefix(k)
            own = {name[len(prefix) :]: value for name, value in metrics.items() if name.startswith(prefix)}
            # a member that stopped counting logs nothing more (Lightning keeps sending the last
            # value it logged), and a step that has nothing of its own is another member's
            if not self.counting(k) or not (own or set(shared) - {"epoch"}):
                continue
            for logger in loggers:
                logger.log_metrics({**own, **shared}, step)

    def save(self) -> None:
        for loggers in self.member_loggers:
            for logger in loggers:
                logger.save()

    def finalize(self, status: str) -> None:
        """The members' loggers are closed by their runs (trainlab.tracking.finish), each with
        its own outcome."""
        self.save()


def member_checkpoint(
    checkpoint: Mapping[str, Any], module: VectorisedClassifier, k: int, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Member k's single-network checkpoint from the group's `checkpoint` (Lightning's dump):
    the loops' progress as the group's, the rest the member's own; `extra`: the member's entries
    its ordinary run would add (callbacks' states, the DataModule's)."""
    member = module.member_module(k)
    member_state: dict[str, Any] = {
        "epoch": checkpoint["epoch"],
        "global_step": checkpoint["global_step"],
        "pytorch-lightning_version": checkpoint["pytorch-lightning_version"],
        "state_dict": member.state_dict(),
        "loops": checkpoint.get("loops"),
        "callbacks": {},
        "hparams_name": None,
        "hyper_parameters": dict(member.hparams),
    }
    optimizers = module.trainer.optimizers  # written during the group's fit
    if "optimizer_states" in checkpoint and optimizers:
        member_state["optimizer_states"] = [member_optimizer_state(optimizers[0], k)]
        member_state["lr_schedulers"] = [_member_schedule(s, k) for s in checkpoint.get("lr_schedulers", [])]
    member.on_save_checkpoint(member_state)  # the module's own entries (the class to rebuild)
    for name, value in extra.items():
        if name == "callbacks":
            member_state["callbacks"].update(value)
        else:
            member_state[name] = value
    return member_state


def _member_schedule(state: Mapping[str, Any], k: int) -> dict[str, Any]:
    """A schedule's state with each per-member rate ([K] tensors) as member k's float."""

    def pick(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim == 1:
            return float(value[k])
        if isinstance(value, list):
            return [pick(v) for v in value]
        return value

    return {name: pick(value) for name, value in state.items()}


class MemberCheckpointIO(AtomicCheckpointIO):
    """Writes members' checkpoints: `trainer.save_checkpoint(path, storage_options={"members":
    {k: [paths]}})` writes member k's checkpoint (`member_checkpoint`) to each of its paths,
    atomically, and nothing at `path`. Any other save is the group's own, as AtomicCheckpointIO's."""

    def __init__(self, extra: Callable[[int], Mapping[str, Any]]) -> None:
        super().__init__()
        self.module: VectorisedClassifier | None = None
        self._extra = extra

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        members = storage_options.get("members") if isinstance(storage_options, dict) else None
        if members is None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        assert self.module is not None, "MemberCheckpointIO.module is the group's module"
        for k, paths in members.items():
            state = member_checkpoint(checkpoint, self.module, k, self._extra(k))
            for member_path in paths:
                super().save_checkpoint(state, member_path)


class MemberCheckpoints(pl.Callback):
    """Each member's best checkpoint (its config's `callbacks.model_checkpoint`: the monitored
    metric, mode, file name; the best one kept) and `last.ckpt` (`callbacks.last_checkpoint`),
    written after each validation as an ordinary job's ModelCheckpoint callbacks write them, and
    `last.ckpt` when the fit is interrupted (`callbacks.interrupt_checkpoint`)."""

    def __init__(
        self,
        views: Sequence[MemberView],
        best: Sequence[ModelCheckpoint | None],
        last: Sequence[ModelCheckpoint | None],
        on_interrupt: Sequence[Path | None],
    ) -> None:
        self.views, self.best, self.last, self.on_interrupt = (
            list(views),
            list(best),
            list(last),
            list(on_interrupt),
        )
        self.interrupt_saved: dict[int, Path] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        writes: dict[int, list[str]] = {}
        for view, best, last in zip(self.views, self.best, self.last, strict=True):
            if view.stopped_at is not None:
                continue
            metrics = {**view.callback_metrics, "epoch": trainer.current_epoch, "step": trainer.global_step}
            if best is not None and best.monitor in metrics and _improves(best, metrics[best.monitor]):
                path = best.format_checkpoint_name(metrics)
                writes.setdefault(view.k, []).append(path)
                if best.best_model_path and best.best_model_path != path:
                    Path(best.best_model_path).unlink(missing_ok=True)  # save_top_k: 1
                best.best_model_path, best.best_model_score = (
                    path,
                    torch.as_tensor(float(metrics[best.monitor])),
                )
                best.best_k_models = {path: best.best_model_score}
            if last is not None:
                path = last.format_checkpoint_name(metrics)
                writes.setdefault(view.k, []).append(path)
                last.last_model_path = last.best_model_path = path
        self._write(trainer, writes)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not saves_on_interrupt(trainer, exception):
            return
        writes = {
            view.k: [str(path)]
            for view, path in zip(self.views, self.on_interrupt, strict=True)
            if path is not None and view.stopped_at is None
        }
        self._write(trainer, writes)
        self.interrupt_saved.update({k: Path(paths[0]) for k, paths in writes.items()})

    @staticmethod
    def _write(trainer: pl.Trainer, writes: dict[int, list[str]]) -> None:
        if writes:
            first = next(iter(writes.values()))[0]
            trainer.save_checkpoint(first, weights_only=False, storage_options={"members": writes})


def _improves(callback: ModelCheckpoint, value: Any) -> bool:
    value = float(value)
    if not math.isfinite(value):
        return False
    best = callback.best_model_score
    if best is None:
        return True
    return value > float(best) if callback.mode == "max" else value < float(best)
