"""`summary.json`: what every run leaves behind, whether it completed, failed or was interrupted."""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

COMPLETED, DIVERGED, FAILED, INTERRUPTED = "completed", "diverged", "failed", "interrupted"


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item() if value.numel() == 1 else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


class RunSummary:
    """Collects a run's outcome and writes `<run dir>/summary.json` (see DESIGN.md)."""

    def __init__(self, run_dir: Path, seed: int | None, overrides: list[str]) -> None:
        self.path = Path(run_dir) / "summary.json"
        self.data: dict[str, Any] = {
            "status": "running",
            "metrics": {},
            "global_step": 0,
            "epochs": 0,
            "wall_time_s": 0.0,
            "seed": seed,
            "overrides": list(overrides),
            "error": None,
            "started_at": datetime.now().isoformat(timespec="milliseconds"),
        }
        self.trainer = None
        self._start = time.perf_counter()

    def add_metrics(self, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            number = _number(value)
            if number is not None or name not in self.data["metrics"]:
                self.data["metrics"][name] = number

    def track(self, trainer) -> None:
        """Remember the trainer: step and epoch counts are read from it at the end."""
        self.trainer = trainer

    def _read_trainer(self) -> None:
        if self.trainer is None:
            return
        # max: with ddp_spawn the fit ran in worker processes and the main trainer's counters
        # stay 0, so the caller may have set them from the last checkpoint already.
        self.data["global_step"] = max(self.data["global_step"], int(self.trainer.global_step))
        self.data["epochs"] = max(self.data["epochs"], int(self.trainer.current_epoch))
        self.add_metrics(self.trainer.callback_metrics)

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
            # Lightning turns Ctrl-C during fit into a graceful shutdown and SystemExit(1).
            interrupted = self.trainer is not None and self.trainer.interrupted
            self.data["status"] = INTERRUPTED if interrupted else FAILED
            self.data["error"] = None if interrupted else f"SystemExit({exit_.code})"
            raise
        except BaseException as error:
            self.data["status"] = FAILED
            self.data["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
            raise
        finally:
            self._read_trainer()
            self.data["wall_time_s"] = round(time.perf_counter() - self._start, 3)
            self.data["finished_at"] = datetime.now().isoformat(timespec="milliseconds")
            self.write()

    def copy_completed(self, previous: Path) -> dict[str, Any]:
        """Record, without training, the outcome of an earlier run with the same overrides."""
        earlier = json.loads(Path(previous).read_text())
        keep = {"overrides": self.data["overrides"], "started_at": self.data["started_at"]}
        self.data = {**earlier, **keep, "skipped": True, "completed_in": str(Path(previous).parent)}
        self.write()
        return self.data

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        tmp.replace(self.path)  # never a half-written summary, even if the run is killed mid-write


# Overrides that do not change what a run computes: two runs differing only in these are the same.
_BOOKKEEPING = (
    "skip_completed",
    "hydra.",
    "paths.",
    "task_name",
    "tags",
    "logger",
    "callbacks.rich_progress_bar",
    "trainer.enable_progress_bar",
)


def _same_run_key(overrides: list[str]) -> tuple[str, ...]:
    return tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith(_BOOKKEEPING)))


def find_completed_run(log_root: Path, overrides: list[str]) -> Path | None:
    """The summary.json of an earlier completed run under `log_root` with the same overrides."""
    key = _same_run_key(overrides)
    for path in sorted(Path(log_root).glob("**/summary.json")):
        try:
            earlier = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if earlier.get("status") == COMPLETED and _same_run_key(earlier.get("overrides", [])) == key:
            return path
    return None
