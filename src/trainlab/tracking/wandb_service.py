"""W&B's service process started while a run gets ready, not when its W&B run starts.

Every W&B run talks to a service process (`wandb-core`) that the first W&B run of a process
starts and then waits for: about 0.2 s on a 2-core CPU, spent waiting. `wandb.setup()` starts it
(W&B's documented way to start it ahead of the runs); called in a thread once the training stack
is imported, the wait overlaps with checking the config, reading the data and building the model
and trainer, and the first training step comes 0.2-0.3 s sooner (BENCHMARKS.md, study
throughput). W&B's own locks make a run that starts meanwhile wait for the service being started.
`wandb.setup()` imports nothing that `import wandb` has not (it only starts the process), so the
thread never imports a module while the main thread does.
"""

from __future__ import annotations

import logging
import threading

from omegaconf import DictConfig

log = logging.getLogger(__name__)

_started = False  # once per process: the service serves every later run of the process


def start_wandb_service(cfg: DictConfig, rank: int) -> threading.Thread | None:
    """Start W&B's service in a thread when the run logs to W&B and is process 0 (the only one
    with a W&B run), once per process; returns the thread, or None when nothing was started.
    A failure to start is left to the run's start to report, where W&B tries again."""
    global _started
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if _started or rank != 0 or not wandb_cfg or not wandb_cfg.get("_target_"):
        return None
    import wandb

    _started = True
    thread = threading.Thread(target=_setup, args=(wandb,), name="trainlab-wandb-service", daemon=True)
    thread.start()
    return thread


def _setup(wandb) -> None:
    try:
        wandb.setup()
    except Exception as error:  # reported by the run's own start, which tries again
        log.debug(f"Starting W&B's service ahead of the run failed: {error!r}")
