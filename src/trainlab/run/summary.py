"""`summary.json`: what every run leaves behind, whether it completed, failed or was interrupted.

Callbacks add to it without the training script knowing them: a callback with a method
`summary_items(trainer) -> dict` (the `SummaryContributor` protocol) offers entries that the
summary collects at each heartbeat and at the end of the run. An entry `status` (with `error`)
is the run's outcome as the callback saw it, e.g. `diverged` from the divergence guard.

A record is never destroyed by a later attempt that fails: an attempt in a directory whose
summary.json holds a finished run (completed, diverged, pruned) writes its own record in
`attempts/<its start>/summary.json` (with its `config_tree.log`). If the attempt finishes too, its
record becomes the run's and the earlier one moves to `attempts/<the earlier start>/`; if it
fails or is stopped, summary.json stays the finished run's and the attempt is kept beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from trainlab.run.status import (
    COMPLETED,
    DIVERGED,
    FAILED,
    INTERRUPTED,
    PRUNED,
    RESUMABLE,
    RUNNING,
    current_status,
    process_start,
)
from trainlab.utils.overrides import is_bookkeeping

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now().isoformat(timespec="milliseconds")


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item() if value.numel() == 1 else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


@runtime_checkable
class SummaryContributor(Protocol):
    """A callback with something to record in summary.json (see the module's docstring)."""

    def summary_items(self, trainer: pl.Trainer) -> Mapping[str, Any]:
        """Entries for summary.json: plain data (numbers, strings, lists, dicts); {} for none."""
        ...


# How a process ended (failed, interrupted) says more than an outcome a callback saw before.
_OUTCOME_KEYS = ("status", "error")
# A record that only an attempt ending the same way may replace: the run reached its end.
FINISHED = (COMPLETED, DIVERGED, PRUNED)
# Where attempts that did not replace the run's record are kept (see the module's docstring).
ATTEMPTS_DIR = "attempts"
# The files of one attempt's record: what it says happened, and the config it ran with.
RECORD_FILES = ("summary.json", "config_tree.log")


def describe_error(error: BaseException) -> str:
    """`Type: message` of a run's error, its root cause first when that was an OSError.

    A full disk during a checkpoint save surfaces as torch's `RuntimeError: ... unexpected pos`,
    raised while it cleans up after the OSError that stopped the write (Python keeps that one as
    the error's `__context__`): the record names the OSError, then what was raised."""
    raised = "".join(traceback.format_exception_only(type(error), error)).strip()
    cause = _os_error_in_chain(error)
    if cause is None or cause is error:
        return raised
    return "".join(traceback.format_exception_only(type(cause), cause)).strip() + f" (raised as {raised})"


def _os_error_in_chain(error: BaseException) -> OSError | None:
    """The deepest OSError among `error` and its causes (`raise ... from`) and contexts."""
    found, seen = None, set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        suppressed = current.__suppress_context__ and current.__cause__ is None
        current = current.__cause__ or (None if suppressed else current.__context__)
    return found


def _directory_name(started_at: str) -> str:
    return started_at.replace(":", "-")  # 2026-12-04T15-56-00.123: valid on every file system


class RunSummary:
    """Collects a run's outcome and writes `<run dir>/summary.json` (see DESIGN.md)."""

    def __init__(self, run_dir: Path, seed: int | None, overrides: list[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "summary.json"
        self._kept: Path | None = None  # a finished run's summary.json, replaced only by a finished attempt
        self.data: dict[str, Any] = {
            "status": "running",
            "metrics": {},
            "global_step": 0,
            "epochs": 0,
            "wall_time_s": 0.0,
            "seed": seed,
            "overrides": list(overrides),
            "error": None,
            "started_at": _now(),
        }
        self.trainer = None
        self._start = time.perf_counter()

    def start(self, resumed_from: Path | None = None) -> None:
        """Write `running` before anything is built: a run killed without a chance to write
        its outcome leaves this record (read as `killed` by `current_status`). It replaces the
        summary of an earlier attempt that did not finish; beside a finished one, it is written
        in `attempts/<start>/` (see the module's docstring)."""
        if _status_of(self.path) in FINISHED:
            self._kept = self.path
            self.path = (
                self.run_dir / ATTEMPTS_DIR / _directory_name(self.data["started_at"]) / "summary.json"
            )
            log.info(f"{self._kept} holds a finished run: this attempt is recorded in {self.path.parent}.")
        pid = os.getpid()
        self.data.update(
            status=RUNNING,
            pid=pid,
            hostname=socket.gethostname(),
            process_started=process_start(pid),
            updated_at=_now(),
        )
        if resumed_from is not None:
            self.data["resumed_from"] = str(resumed_from)
        self.write()

    @property
    def record_dir(self) -> Path:
        """Where this attempt's record files go: the run directory, or its `attempts/<start>/`."""
        return self.path.parent

    def resumed_by_rank_zero(self) -> Path | None:
        """The checkpoint named by rank 0's `running` record (summary.json, or the newest
        attempt's): the other processes of a multi-device run, which write no record, resume
        the same one."""
        attempts = sorted(self.run_dir.glob(f"{ATTEMPTS_DIR}/*/summary.json"), reverse=True)
        for path in (self.path, *attempts):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if record.get("status") == RUNNING:
                resumed = record.get("resumed_from")
                return Path(resumed) if resumed else None
        return None

    def heartbeat(self) -> pl.Callback:
        """A callback that refreshes the file at each training epoch end (a few hundred bytes)."""
        return _Heartbeat(self)

    def add_metrics(self, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            number = _number(value)
            if number is not None or name not in self.data["metrics"]:
                self.data["metrics"][name] = number

    def record_best(self, checkpoint: ModelCheckpoint | None) -> str:
        """Record the checkpoint callback's best and return its path ("" if none): `best_checkpoint`,
        `best_epoch` (counted from 0, as Lightning and the checkpoint's file name count) and the
        monitored metric's best value as `metrics["<monitor>_best"]` (`val/acc_best`), next to
        `metrics["val/acc"]`, which stays the last epoch's."""
        path = checkpoint.best_model_path if checkpoint is not None else ""
        if not path:
            return ""
        self.data["best_checkpoint"] = path
        score = _number(checkpoint.best_model_score)
        if checkpoint.monitor and score is not None:
            self.data["metrics"][f"{checkpoint.monitor}_best"] = score
            # the file knows its epoch; the callback keeps only its path and score
            try:
                state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
                self.data["best_epoch"] = int(state["epoch"])
            except (OSError, RuntimeError, KeyError) as error:  # a nicety: never cost the run its test
                log.warning(f"best_epoch left out: cannot read the epoch of {path} ({error}).")
        return path

    @property
    def succeeded(self) -> bool:
        """Completed, or pruned by a search (an outcome, not a crash)."""
        return self.data["status"] in (COMPLETED, PRUNED)

    def track(self, trainer) -> None:
        """Remember the trainer: step and epoch counts are read from it at the end."""
        self.trainer = trainer

    def collect(self, trainer: pl.Trainer) -> None:
        """Add what the trainer's callbacks offer (`SummaryContributor`s). A callback's `status`
        replaces only `running` or `completed`: a run that then failed or was interrupted keeps
        that status, and the callback's other entries."""
        for callback in trainer.callbacks:
            if not isinstance(callback, SummaryContributor):
                continue
            try:
                items = dict(callback.summary_items(trainer) or {})
            except Exception:  # a broken contributor must not cost the run its summary
                log.exception(f"{type(callback).__name__}.summary_items failed; its entries are left out.")
                continue
            if "status" in items and self.data["status"] not in (RUNNING, COMPLETED):
                items = {k: v for k, v in items.items() if k not in _OUTCOME_KEYS}
            self.data.update(items)

    def read_last_checkpoint(self, trainer: pl.Trainer) -> None:
        """After a fit in spawned processes (ddp_spawn) the main process's trainer and callbacks
        saw no step: read the progress from last.ckpt, and give each contributing callback its
        saved state (Lightning's `load_state_dict`) so that it offers what the fit's did."""
        callback = trainer.checkpoint_callback
        last = Path(callback.dirpath) / "last.ckpt" if callback is not None and callback.dirpath else None
        if last is None or not last.is_file():
            return
        state = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
        self.data.update(global_step=int(state["global_step"]), epochs=int(state["epoch"]) + 1)
        saved = state.get("callbacks", {})
        for callback in trainer.callbacks:
            if isinstance(callback, SummaryContributor) and callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])

    def _read_trainer(self) -> None:
        if self.trainer is None:
            return
        # max: with ddp_spawn the fit ran in worker processes and the main trainer's counters
        # stay 0, so the caller may have set them from the last checkpoint already.
        self.data["global_step"] = max(self.data["global_step"], int(self.trainer.global_step))
        self.data["epochs"] = max(self.data["epochs"], int(self.trainer.current_epoch))
        self.add_metrics(self.trainer.callback_metrics)
        self.collect(self.trainer)

    @contextmanager
    def record(self) -> Iterator[RunSummary]:
        """Run the block; on any exit set the status and write the file, then let errors through."""
        try:
            yield self
            if self.data["status"] == "running":
                self.data["status"] = COMPLETED
        except KeyboardInterrupt:
            self.data["status"] = INTERRUPTED
            raise
        except SystemExit as exit_:
            # Lightning turns Ctrl-C during fit into a graceful shutdown and SystemExit(1), and
            # SIGTERM into SIGTERMException (a SystemExit) at the next step boundary.
            interrupted = isinstance(exit_, SIGTERMException) or (
                self.trainer is not None and self.trainer.interrupted
            )
            self.data["status"] = INTERRUPTED if interrupted else FAILED
            self.data["error"] = None if interrupted else f"SystemExit({exit_.code})"
            raise
        except BaseException as error:
            self.data["status"] = FAILED
            self.data["error"] = describe_error(error)
            raise
        finally:
            self._read_trainer()
            self.data["wall_time_s"] = round(time.perf_counter() - self._start, 3)
            self.data["finished_at"] = self.data["updated_at"] = _now()
            if rank_zero_only.rank == 0:  # one record of a multi-process run: process 0's
                self.write()
                self._replace_kept_record()

    def _replace_kept_record(self) -> None:
        """A finished attempt beside a finished run's record: the attempt's record becomes the
        run's, and the earlier one moves to `attempts/<its start>/`."""
        if self._kept is None or self.data["status"] not in FINISHED:
            return
        try:
            earlier_start = json.loads(self._kept.read_text()).get("started_at") or "earlier"
        except (OSError, ValueError):
            earlier_start = "earlier"
        archive = self.run_dir / ATTEMPTS_DIR / _directory_name(str(earlier_start))
        archive.mkdir(parents=True, exist_ok=True)
        attempt = self.path.parent
        for name in RECORD_FILES:
            if (self.run_dir / name).exists():
                os.replace(self.run_dir / name, archive / name)
            if (attempt / name).exists():
                os.replace(attempt / name, self.run_dir / name)
        with contextlib.suppress(OSError):
            attempt.rmdir()
        self.path, self._kept = self._kept, None

    def copy_completed(self, previous: Path, write: bool = True) -> dict[str, Any]:
        """Record, without training, the outcome of an earlier run with the same overrides
        (`write`: in this run's summary.json; False for the other processes of a multi-device run)."""
        earlier = json.loads(Path(previous).read_text())
        keep = {"overrides": self.data["overrides"], "started_at": self.data["started_at"]}
        self.data = {**earlier, **keep, "skipped": True, "completed_in": str(Path(previous).parent)}
        if write:
            self.write()
        return self.data

    def write(self) -> None:
        """Write the file whole (a temporary file renamed over it: never a half-written summary,
        even if the run is killed mid-write), through no symbolic link."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.unlink(missing_ok=True)  # a link left there is removed, not followed
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(tmp, flags, 0o644), "w") as file:
            file.write(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        tmp.replace(self.path)


def _status_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _same_run_key(overrides: list[str]) -> tuple[str, ...]:
    return tuple(sorted(o for o in overrides if not is_bookkeeping(o)))


@dataclass
class EarlierRuns:
    """What earlier launches left for a run's overrides (see `find_earlier_runs`)."""

    completed: Path | None = None  # summary.json of a completed run: nothing to train
    resumable: Path | None = None  # last.ckpt of the latest interrupted or killed run: resume it


def find_earlier_runs(roots: Iterable[Path], overrides: list[str]) -> EarlierRuns:
    """Search the run directories under `roots` for runs with the same overrides."""
    key = _same_run_key(overrides)
    found, latest_start = EarlierRuns(), ""
    paths = sorted(
        {
            p
            for root in roots
            if Path(root).is_dir()
            for p in Path(root).glob("**/summary.json")
            if ATTEMPTS_DIR not in p.relative_to(root).parts  # a run's attempts belong to the run
        }
    )
    for path in paths:
        try:
            earlier = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if _same_run_key(earlier.get("overrides", [])) != key:
            continue
        status, checkpoint = current_status(earlier), path.parent / "checkpoints" / "last.ckpt"
        if status == COMPLETED and found.completed is None:
            found.completed = path
        elif status in RESUMABLE and checkpoint.is_file() and earlier.get("started_at", "") >= latest_start:
            found.resumable, latest_start = checkpoint, earlier.get("started_at", "")
    return found


class _Heartbeat(pl.Callback):
    """Refreshes summary.json (`updated_at`, steps, epochs, metrics, what callbacks offer) at each
    training epoch end."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        data = self.summary.data
        data.update(global_step=int(trainer.global_step), epochs=int(trainer.current_epoch) + 1)
        data["updated_at"] = _now()
        self.summary.add_metrics(trainer.callback_metrics)
        self.summary.collect(trainer)
        self.summary.write()
