"""Lightning's SLURM environment, buildable from YAML (conf/trainer/slurm.yaml)."""

from __future__ import annotations

import signal

from lightning.pytorch.plugins.environments import SLURMEnvironment


def slurm_environment(auto_requeue: bool = True, requeue_signal: str = "SIGUSR1") -> SLURMEnvironment:
    """`SLURMEnvironment(auto_requeue, requeue_signal)` with the signal given by name (YAML has no
    `signal.Signals`). On `requeue_signal` Lightning saves `hpc_ckpt_<n>.ckpt` in the run directory
    and requeues the job with `scontrol requeue`; the requeued job resumes from that checkpoint.
    The signal must be the one SLURM sends before the time limit (`--signal=USR1@90`, set by
    conf/hydra/launcher/slurm.yaml)."""
    return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=signal.Signals[requeue_signal])
