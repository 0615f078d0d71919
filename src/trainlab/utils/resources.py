"""CPU threads per job, so that parallel jobs of a sweep do not oversubscribe the cores."""

from __future__ import annotations

import logging
import os

import torch
from hydra.core.hydra_config import HydraConfig

log = logging.getLogger(__name__)


def parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs at once on this machine (1 unless joblib with n_jobs)."""
    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return os.cpu_count() or 1 if n_jobs < 0 else max(1, n_jobs)


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads: `num_threads`, or cores / parallel jobs when it is null."""
    jobs = parallel_jobs()
    if num_threads is None and jobs <= 1:
        return torch.get_num_threads()  # a lone job keeps torch's own choice
    threads = num_threads or max(1, (os.cpu_count() or 1) // jobs)
    torch.set_num_threads(threads)
    log.info(f"Using {threads} CPU thread(s) per job ({jobs} parallel job(s)).")
    return threads
