"""A callback for the signal tests: slows one multirun job down while a file exists.

Subprocess tests need a job that is still training when the signal comes, and a re-launch of
the same overrides that runs at full speed: the job sleeps after each training batch while
`<gate>/<its job number>` exists, and the test deletes the file before re-launching.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig


class Throttle(pl.Callback):
    def __init__(self, gate: str, seconds: float = 0.2) -> None:
        self.gate, self.seconds = Path(gate), seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (self.gate / str(HydraConfig.get().job.num)).exists():
            time.sleep(self.seconds)
