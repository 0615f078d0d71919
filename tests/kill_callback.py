"""A callback for the launcher tests: one multirun job's process is killed by SIGKILL at a step.

What the out-of-memory killer does to a job: no Python code of the job runs after it, no
summary is written, no `finally` block runs. The job numbered `job` sends SIGKILL to its own
process before training step `step`; every other job trains on.
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig


class KillAt(pl.Callback):
    def __init__(self, job: int, step: int) -> None:
        self.job, self.step = job, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if HydraConfig.get().job.num == self.job and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
