"""How a run's trackers are closed, whatever its outcome."""

from __future__ import annotations

import contextlib
import sys


def finish_loggers(loggers: list, status: str, succeeded: bool) -> None:
    """Close every logger, recording the run's `status`; a W&B run is finished with a non-zero exit
    code unless the run `succeeded` (completed, or pruned by a search: an outcome, not a crash), so that the next job of a multirun starts a fresh W&B run. A W&B run started for a logger
    that never reached `loggers` (building the next one failed) is finished too: Lightning's
    WandbLogger would otherwise join it in the next job and mix the two jobs' records."""
    for logger in loggers:
        with contextlib.suppress(Exception):  # closing a tracker must never hide the run's outcome
            if type(logger).__name__ != "WandbLogger":
                logger.finalize(status if status in ("success", "failed") else "success")
            elif callable(getattr(logger, "flush", None)):  # trainlab's: the last step's metrics
                logger.flush()
    wandb = sys.modules.get("wandb")  # imported only where a W&B logger was built
    if wandb is not None and getattr(wandb, "run", None) is not None:
        with contextlib.suppress(Exception):
            wandb.run.summary["status"] = status
            wandb.finish(exit_code=0 if succeeded else 1)
