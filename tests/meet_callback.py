"""A callback for the parallel-launcher tests: the jobs of a multirun meet before they train.

Whether two tiny jobs overlap in time is up to the scheduler: on a busy machine one worker
process can finish a job of half a second before its sibling has imported torch, and then take
the second job too. Each job here leaves `<job number>` in `folder` when it starts training and
waits (up to `timeout_s`) until `peers` jobs have; it leaves `<job number>.met` when they have.
Jobs run one after the other never meet, so a launcher that does not run them in parallel fails
the test instead of passing it by luck.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig


class MeetPeers(pl.Callback):
    def __init__(self, folder: str, peers: int, timeout_s: float = 120.0) -> None:
        self.folder, self.peers, self.timeout_s = Path(folder), peers, timeout_s

    def on_train_start(self, trainer, pl_module) -> None:
        job = str(HydraConfig.get().job.num)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / job).touch()
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if sum(1 for path in self.folder.iterdir() if path.suffix == "") >= self.peers:
                (self.folder / f"{job}.met").touch()
                return
            time.sleep(0.05)
