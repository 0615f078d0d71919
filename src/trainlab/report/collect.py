"""Read a multirun directory: one row per job, from its summary.json and overrides."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import yaml

from trainlab.run.status import current_status
from trainlab.utils.overrides import override_values

log = logging.getLogger(__name__)

# `killed`: summary.json still says `running` but its process is gone (SIGKILL, OOM killer)
STATUS_FAILED = ("failed", "diverged", "interrupted", "killed", "missing")
# overrides that identify a job instead of setting it: a search's trial number
NOT_AXES = ("optuna_trial",)
# columns of a job row that are not settings (overrides) nor metrics
# the value of a key that a job did not override (it kept its config default)
DEFAULT = "(default)"
FIXED_COLUMNS = ("job", "path", "status", "error", "wall_time_s", "global_step", "started_at", "finished_at")


def _job_overrides(job: Path) -> list[str]:
    """The job's own overrides, as Hydra recorded them (for jobs without a readable summary)."""
    overrides_file = job / ".hydra" / "overrides.yaml"
    return (yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else None) or []


# What the report reads from a summary.json (DESIGN.md's keys): a field of another type (a hand-edited
# file, a study's own writer) makes the job `failed`, naming the file and the field; the report goes on.
_NUMBER = (int, float)
SUMMARY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "status": ((str,), "a string"),
    "metrics": ((dict,), "an object of metric: number"),
    "overrides": ((list,), "a list of strings"),
    "error": ((str, type(None)), "a string or null"),
    "global_step": ((int, type(None)), "an integer or null"),
    "epochs": ((int, type(None)), "an integer or null"),
    "wall_time_s": ((*_NUMBER, type(None)), "a number or null"),
    "seed": ((int, type(None)), "an integer or null"),
    "num_classes": ((int, type(None)), "an integer or null"),
    "started_at": ((str, type(None)), "a string or null"),
    "finished_at": ((str, type(None)), "a string or null"),
    "pid": ((int, type(None)), "an integer or null"),
    "hostname": ((str, type(None)), "a string or null"),
}


def summary_type_error(summary: dict) -> str | None:
    """The first field of `summary` whose type is not the one the report reads (SUMMARY_TYPES), as
    text; None when all fit. A metric must be a number or null; an override a string."""
    for key, (types, expected) in SUMMARY_TYPES.items():
        value = summary.get(key)
        if key in summary and (isinstance(value, bool) or not isinstance(value, types)):
            return f"`{key}` is {json.dumps(value)[:60]} ({type(value).__name__}), expected {expected}"
    for name, value in (summary.get("metrics") or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, _NUMBER)):
            return f"`metrics.{name}` is {json.dumps(value)[:60]}, expected a number or null"
    bad = [o for o in summary.get("overrides") or [] if not isinstance(o, str)]
    if bad:
        return f"`overrides` holds {json.dumps(bad[0])[:60]}, expected strings (`key=value`)"
    return None


def read_summary(path: Path) -> dict:
    """A job's summary.json; one that is not valid JSON (a job killed while writing it, a disk
    that filled up) or has a field of another type than the report reads (SUMMARY_TYPES) becomes
    a `failed` job whose error names the file, and the report goes on."""
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        return _unreadable(path, f"corrupt summary.json ({path}): {error}")
    wrong = summary_type_error(summary)
    if wrong:
        return _unreadable(path, f"summary.json of another shape ({path}): {wrong}")
    return summary


def _unreadable(path: Path, message: str) -> dict:
    log.warning(message)
    return {"status": "failed", "overrides": _job_overrides(path.parent), "metrics": {}, "error": message}


def job_dirs(multirun_dir: Path) -> list[Path]:
    """Job directories (`<multirun dir>/<job_num>`), in job order."""
    jobs = [
        p
        for p in Path(multirun_dir).iterdir()
        if p.is_dir() and ((p / ".hydra").is_dir() or (p / "summary.json").is_file())
    ]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def load_jobs(multirun_dir: Path) -> pd.DataFrame:
    """A row per job: `job`, one column per overridden key, status, error, wall time, metrics.

    A job that left no summary.json is listed with status `missing`; one whose summary.json says
    `running` while its process is gone, as `killed`.
    """
    rows = []
    for job in job_dirs(multirun_dir):
        summary_path = job / "summary.json"
        if summary_path.is_file():
            summary = read_summary(summary_path)
        else:
            summary = {
                "status": "missing",
                "overrides": _job_overrides(job),
                "metrics": {},
                "error": "no summary.json",
            }
        row = {"job": job.name, "path": str(job)}
        row.update(override_values(summary.get("overrides", [])))
        row.update(
            status=current_status(summary),
            error=summary.get("error"),
            wall_time_s=summary.get("wall_time_s"),
            global_step=summary.get("global_step"),
            started_at=summary.get("started_at"),
            finished_at=summary.get("finished_at"),
        )
        row.update({f"metric:{k}": v for k, v in (summary.get("metrics") or {}).items()})
        rows.append(row)
    jobs = pd.DataFrame(rows)
    # a key that some jobs did not override kept its config default there
    settings = setting_columns(jobs)
    jobs[settings] = jobs[settings].fillna(DEFAULT).astype(str)
    return jobs


def setting_columns(jobs: pd.DataFrame) -> list[str]:
    return [c for c in jobs.columns if c not in FIXED_COLUMNS and not c.startswith("metric:")]


def typed_settings(jobs: pd.DataFrame) -> pd.DataFrame:
    """The jobs with each setting whose values are all numbers (seed, optimizer.lr) as numbers, and
    None where a job kept the default; option names (init=kaiming_normal), flags and lists stay
    strings. `load_jobs` keeps every setting a string for grouping and the text report; a table
    that sorts and plots (W&B's) needs the numbers."""
    typed = jobs.copy()
    for column in setting_columns(jobs):
        given = jobs[column][jobs[column] != DEFAULT]
        numbers = pd.to_numeric(given, errors="coerce")
        if not len(given) or numbers.isna().any():
            continue
        whole = given.str.fullmatch(r"[+-]?\d+").all()
        values = [
            None if value == DEFAULT else int(value) if whole else float(value) for value in jobs[column]
        ]
        typed[column] = pd.Series(values, index=jobs.index, dtype=object)  # object: ints stay ints
    return typed


def varied_axes(jobs: pd.DataFrame) -> list[str]:
    """Overridden keys whose value differs between jobs (the study's axes), seed included; not
    the keys that name a job rather than set it (NOT_AXES)."""
    return [k for k in setting_columns(jobs) if k not in NOT_AXES and jobs[k].nunique(dropna=False) > 1]


def num_classes(job: Path) -> int | None:
    """How many classes a job's classifier had, from what the job left: summary.json's
    `num_classes` (when the run records it), the job's config (`data.classes=[...]`, a source's
    `num_classes`), else the network hyperparameters in its last checkpoint (read memory-mapped,
    weights only: no tensor is loaded). None when none of them tells."""
    job = Path(job)
    summary_path = job / "summary.json"
    if summary_path.is_file():
        value = read_summary(summary_path).get("num_classes")
        if isinstance(value, int):
            return value
    config_path = job / ".hydra" / "config.yaml"
    data = ((yaml.safe_load(config_path.read_text()) if config_path.is_file() else None) or {}).get(
        "data"
    ) or {}
    if data.get("classes"):
        return len(data["classes"])
    if isinstance((data.get("source") or {}).get("num_classes"), int):
        return data["source"]["num_classes"]
    checkpoint = job / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        import torch

        try:
            hparams = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)[
                "hyper_parameters"
            ]
            return int(hparams["network"]["num_classes"])
        except (KeyError, TypeError, ValueError, RuntimeError, OSError, EOFError):
            return None
    return None


def chance_level(jobs: pd.DataFrame) -> float | None:
    """1 / number of classes when the completed jobs that tell it agree on it, else None."""
    done = jobs[jobs["status"] == "completed"] if len(jobs) else jobs
    counts = {num_classes(Path(p)) for p in done.get("path", [])} - {None}
    if len(counts) != 1 or min(counts) < 1:
        return None
    return 1 / counts.pop()


def learning_curves(job: Path) -> pd.DataFrame | None:
    """The job's CSV metrics (`csv/metrics.csv`), one row per logged step; None if absent."""
    path = Path(job) / "csv" / "metrics.csv"
    return pd.read_csv(path) if path.is_file() else None
