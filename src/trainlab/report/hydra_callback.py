"""Hydra callback: when a multirun ends, write its study report and note failed jobs.

Jobs record their failures in summary.json and return normally, so that the sweep goes on;
this callback reads the summaries once all jobs are done, and `trainlab.train.main` exits
with status 1 if any job failed, diverged or was interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
# Jobs of the last multirun of this process that did not complete (read by trainlab.train.main).
FAILED_JOBS: list[str] = []


class MultirunReport(Callback):
    def __init__(self, enabled: bool = True, log_to_wandb: bool = False) -> None:
        self.enabled, self.log_to_wandb = enabled, log_to_wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from trainlab.report.collect import STATUS_FAILED, load_jobs
        from trainlab.report.study import write_report

        directory = Path(config.hydra.sweep.dir)
        if not directory.is_dir():
            return
        try:
            jobs = write_report(directory, self.log_to_wandb).jobs if self.enabled else load_jobs(directory)
        except Exception:  # a broken report must not hide the jobs' own results
            log.exception(f"Could not write the study report of {directory}")
            jobs = load_jobs(directory)
        failed = jobs[jobs["status"].isin(STATUS_FAILED)] if len(jobs) else jobs
        FAILED_JOBS[:] = [str(p) for p in failed.get("path", [])]
        if FAILED_JOBS:
            log.error(
                f"{len(FAILED_JOBS)} of {len(jobs)} jobs did not complete: see {directory / 'report.md'}"
            )
