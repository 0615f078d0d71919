"""Where a run lives and how its trackers are closed."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from trainlab.run.status import COMPLETED, PRUNED


def run_dir(cfg: DictConfig) -> Path:
    """This run's directory: `paths.output_dir` (Hydra's output dir unless overridden)."""
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def finish_loggers(loggers: list, status: str) -> None:
    """Close every logger; a W&B run is finished with a non-zero exit code unless it completed
    (or was pruned by a search: an outcome, not a crash),
    so that the next job of a multirun starts a fresh W&B run. A W&B run started for a logger
    that never reached `loggers` (building the next one failed) is finished too: Lightning's
    WandbLogger would otherwise join it in the next job and mix the two jobs' records."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            with contextlib.suppress(Exception):  # closing a tracker must never hide the run's outcome
                logger.finalize(status if status in ("success", "failed") else "success")
    wandb = sys.modules.get("wandb")  # imported only where a W&B logger was built
    if wandb is not None and getattr(wandb, "run", None) is not None:
        with contextlib.suppress(Exception):
            wandb.run.summary["status"] = status
            wandb.finish(exit_code=0 if status in (COMPLETED, PRUNED) else 1)
