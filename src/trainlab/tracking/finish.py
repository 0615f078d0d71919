"""How a run's trackers are closed, whatever its outcome."""

from __future__ import annotations

import contextlib
import sys


def finish_loggers(loggers: list, status: str, succeeded: bool) -> None:
    """Close every logger, recording the run's `status`; a W&B run is finished with a non-zero exit
    code unless the run `succeeded` (completed, or pruned by a search: an outcome, not a crash), so that the next job of a multirun starts a fresh W&B run. A W&B run started for a logger
    that never reached `loggers` (building the next one failed) is finished too: Lightning's
    WandbLogger would otherwise join it in the next job and mix the two jobs' records. A W&B run
    that is not the process's current one (started with `reinit="create_new"`, as the members of a
    vectorised group are, trainlab.vectorised) is finished through its logger."""
    wandb = sys.modules.get("wandb")  # imported only where a W&B logger was built
    for logger in loggers:
        with contextlib.suppress(Exception):  # closing a tracker must never hide the run's outcome
            if type(logger).__name__ != "WandbLogger":
                logger.finalize(status if status in ("success", "failed") else "success")
                continue
            if callable(getattr(logger, "flush", None)):  # trainlab's: the last step's metrics
                logger.flush()
        # the run the logger started, if any (its `experiment` property would start one)
        run = getattr(logger, "_experiment", None)
        if wandb is not None and run is not None and run is not getattr(wandb, "run", None):
            with contextlib.suppress(Exception):
                run.summary["status"] = status
                run.finish(exit_code=0 if succeeded else 1)
    if wandb is not None and getattr(wandb, "run", None) is not None:
        with contextlib.suppress(Exception):
            wandb.run.summary["status"] = status
            wandb.finish(exit_code=0 if succeeded else 1)
