"""What a job asks of the machine: CPU threads per job, so that parallel jobs of a sweep do not
oversubscribe the cores; and CUDA availability checks that cost nothing where there is no GPU."""

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


NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def cheap_cuda_checks_without_gpus() -> None:
    """Where no GPU is visible, let `torch.cuda.is_available()` answer from CUDA's runtime again.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when it is imported: the check then asks NVML
    and leaves CUDA uninitialised, so that a forked process can still use the GPU. Where NVML
    finds no device it is never initialised, and every check loads the library anew,
    and Adam(W) checks once per step (torch.optim's graph-capture health check): CPU steps took
    ~0.8 ms longer for the default CNN, 13-16% longer for the digits MLP (BENCHMARKS.md). With
    no GPU there is no CUDA state to protect; the runtime's answer costs ~1 us.
    """
    if os.environ.get(NVML_CUDA_CHECK) == "1" and torch.cuda.device_count() == 0:
        os.environ[NVML_CUDA_CHECK] = "0"
