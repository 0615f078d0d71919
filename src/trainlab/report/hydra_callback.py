"""Hydra callback: when a multirun ends, write its study report and give the sweep's verdict.

Jobs record their failures in summary.json and return normally, so that the sweep goes on;
this callback reads the summaries once all jobs are done (in the launching process, whichever
the launcher: basic, joblib, submitit) and ends the process with exit status 1 if any job
failed, diverged or was interrupted. A multirun stopped by Ctrl-C or SIGTERM never reaches
`on_multirun_end`: under the basic launcher, whose jobs run in this process, the callback
registers at the sweep's start a report to write when the process exits (`atexit`), and
withdraws it at the sweep's end; the stop sets the exit status (130, 143).
"""

from __future__ import annotations

import atexit
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class MultirunReport(Callback):
    def __init__(self, enabled: bool = True, log_to_wandb: bool = False) -> None:
        self.enabled, self.log_to_wandb = enabled, log_to_wandb

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Under the basic launcher, report the jobs so far if the process ends before the sweep
        does (Ctrl-C, SIGTERM inside a job or between two jobs). Other launchers run the jobs in
        worker processes, and this process reaches `on_multirun_end`."""
        if "BasicLauncher" in str(config.hydra.launcher.get("_target_", "")):
            atexit.register(self.report_stopped, Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report, then exit 1 if a job did not complete. Hydra returns nothing from a multirun to
        its caller, so the verdict is the exit status; SystemExit passes Hydra's guard around
        callbacks (which turns an Exception into a warning). Hydra calls `on_multirun_end` in
        reverse order: the callbacks listed after this one have already run."""
        atexit.unregister(self.report_stopped)
        if self.finish(Path(config.hydra.sweep.dir)):
            raise SystemExit(1)

    def report_stopped(self, directory: Path) -> None:
        """The report of a multirun that the process left before its end (at exit, once)."""
        log.warning(f"Multirun stopped: no further jobs start. Report of the jobs so far: {directory}")
        self.finish(directory)

    def finish(self, directory: Path) -> list[str]:
        """Write the report of the jobs in `directory`, log what was skipped and what failed;
        return the directories of the jobs that did not complete."""
        from trainlab.report.collect import STATUS_FAILED, load_jobs
        from trainlab.report.write import write_report

        if not directory.is_dir():
            return []
        try:
            jobs = write_report(directory, self.log_to_wandb).jobs if self.enabled else load_jobs(directory)
        except Exception:  # a broken report must not hide the jobs' own results
            log.exception(f"Could not write the study report of {directory}")
            jobs = load_jobs(directory)
        _log_skipped(directory, len(jobs))
        failed = jobs[jobs["status"].isin(STATUS_FAILED)] if len(jobs) else jobs
        not_completed = [str(p) for p in failed.get("path", [])]
        if not_completed:
            log.error(
                f"{len(not_completed)} of {len(jobs)} jobs did not complete: see {directory / 'report.md'}"
            )
        return not_completed


def _log_skipped(directory: Path, total: int) -> None:
    """skip_completed=true: say how many jobs were not trained again, and where they had completed."""
    from trainlab.report.collect import job_dirs

    places = []
    for job in job_dirs(directory):
        try:
            summary = json.loads((job / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        if summary.get("skipped"):
            places.append(summary.get("completed_in", "?"))
    if places:
        where = ", ".join(sorted(set(places))) if len(set(places)) <= 3 else f"{len(set(places))} directories"
        log.info(f"skip_completed: skipped {len(places)} of {total} jobs (already completed in {where}).")
