"""A callback for scripts/bench/startup.py: prints a marker when the first training step starts."""

import sys

import lightning.pytorch as pl


class FirstStepMarker(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            print("TRAINLAB_FIRST_STEP", flush=True)
            sys.stdout.flush()
