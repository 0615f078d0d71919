"""Which training steps are logging steps: the steps whose metrics Lightning sends to the loggers.

Between two logging steps a training step reads nothing back from the device (DESIGN.md): the
module logs its step loss, and the callbacks read the values they show or check, on these steps
and at epoch ends only. The answer comes from the trainer's public state, the same rule as
Lightning's own (its logger connector logs the step whose count of stepped batches, this one
included, is a multiple of `trainer.log_every_n_steps`, and the step at which the fit stops).
"""

from __future__ import annotations

import lightning.pytorch as pl


def is_logging_step(trainer: pl.Trainer) -> bool:
    """Whether the training step in progress is a logging step. Ask before its optimizer step
    (in `training_step` or `on_train_batch_start`), while `trainer.global_step` still counts
    the steps before it; under gradient accumulation every micro-batch of the step answers alike.
    """
    every = trainer.log_every_n_steps
    if not every:
        return False
    return (trainer.global_step + 1) % every == 0 or trainer.should_stop
