"""A callback for the resume tests that run in subprocesses (DDP): Ctrl-C at a given step.

Every process raises KeyboardInterrupt before the same training step, as Ctrl-C in a terminal
reaches all of them; the interrupt checkpoint is saved at that step.
"""

from __future__ import annotations

import lightning.pytorch as pl


class InterruptAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
