"""DDP's other processes for a job of a multirun: each runs that job, not the whole multirun.

Where no cluster starts the processes of a DDP run (`trainer=ddp` on a workstation's GPUs,
`trainer=ddp trainer.accelerator=cpu trainer.devices=2`), Lightning's `_SubprocessScriptLauncher`
starts them by running the process's command line again. In a Hydra multirun that command line
is the whole sweep: each worker ran its own multirun in step with the main process, writing a
second multirun directory with summaries and a report of its own; in a job of submitit's local
launcher the command line is submitit's; and under a sweeper that picks the jobs as it goes
(Optuna) a worker would train other hyperparameters than process 0 and add trials of its own.

`WorkersPerJob` gives Lightning a command that runs the job alone: `python -m trainlab.train`
with the job's overrides, in Hydra's RUN mode, in the job's directory. It is a context manager
around one job: on entry it puts its two functions into Lightning's launcher modules, on exit it
waits for the job's workers, closes the process group, drops the DDP environment variables
Lightning set (so that the next job starts workers of its own) and puts Lightning's own
functions back. Processes started by a cluster (SLURM's srun, torchrun) are left as they are.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

# set by Lightning's launcher in the main process before it starts the workers
LAUNCHER_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
WORKER_EXIT_TIMEOUT_S = 120


def job_worker_command(local_rank: int) -> tuple[list[str], str]:
    """(command, working directory) of DDP worker `local_rank` for the running Hydra job; the
    replacement for Lightning's `_hydra_subprocess_cmd`, which repeats the whole command line."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "trainlab.train"]
    for source in hydra_cfg.runtime.config_sources:  # a study's own configs (--config-dir)
        if source.provider == "command-line" and source.schema == "file":
            command += ["--config-dir", source.path]
    command += ["--config-name", hydra_cfg.job.config_name, *hydra_cfg.overrides.task]
    command += [
        "hydra.mode=RUN",
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.sweep.dir={hydra_cfg.sweep.dir}",
        "hydra.output_subdir=null",  # the job's .hydra/ is the main process's
        f"hydra.job.name=train_ddp_process_{local_rank}",
    ]
    return command, get_original_cwd()


class WorkersPerJob:
    """Within a multirun job: start DDP workers for this job only (`job_worker_command`), and
    let the next job start its own.

        with WorkersPerJob() as workers:
            ...  # build the trainer, fit, test
            workers.trainer = trainer  # whose workers to wait for when the job ends

    Lightning also starts a thread that SIGKILLs the main process when a worker exits with an
    error (so that it does not wait forever in a collective); a job's workers ending, even
    badly, must not end the sweep, so the exit disarms that thread before it lets them go."""

    # replaced in Fabric's launcher module and in the Trainer's, which imported the names
    REPLACED = ("_hydra_subprocess_cmd", "_launch_process_observer")

    def __init__(self) -> None:
        from trainlab.utils.hydra_job import in_multirun

        # LOCAL_RANK already set: a worker, or processes that a cluster or torchrun started
        self.active = in_multirun() and "LOCAL_RANK" not in os.environ
        self.trainer: Any = None
        self._observers: list[Any] = []
        self._originals: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> WorkersPerJob:
        if self.active:
            replacements = {
                "_hydra_subprocess_cmd": job_worker_command,
                "_launch_process_observer": self._observe,
            }
            for module in _launcher_modules():
                for name in self.REPLACED:
                    self._originals.append((module, name, getattr(module, name)))
                    setattr(module, name, replacements[name])
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.end(self.trainer)
        finally:
            for module, name, original in reversed(self._originals):
                setattr(module, name, original)
            self._originals.clear()

    def _observe(self, child_processes: list) -> None:
        """Lightning's `_launch_process_observer`, keeping the thread so that `end` can disarm it."""
        from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

        observer = _ChildProcessObserver(child_processes=child_processes, main_pid=os.getpid())
        self._observers.append(observer)
        observer.start()

    def end(self, trainer: Any) -> None:
        """After the job: let its workers finish (a completed job's first, so that they end
        their last collective; a failed job's after closing the process group, which frees a
        worker waiting for process 0), then forget the environment Lightning's launcher set."""
        if not self.active or "LOCAL_RANK" not in os.environ:
            return  # this job started no workers
        import torch.distributed
        from lightning.pytorch.trainer.states import TrainerStatus

        for observer in self._observers:
            observer._child_processes = []  # its next look finds nothing to watch, and it ends
        launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
        workers = list(getattr(launcher, "procs", []))
        if trainer is None or trainer.state.status != TrainerStatus.FINISHED:
            _close_process_group(torch.distributed)
        for process in workers:
            try:
                process.wait(timeout=WORKER_EXIT_TIMEOUT_S)
            except Exception:  # a worker that hangs must not hang the sweep
                log.warning(f"DDP worker {process.pid} did not exit after the job; stopping it.")
                process.kill()
                process.wait()
        _close_process_group(torch.distributed)
        for name in LAUNCHER_ENVIRONMENT:
            os.environ.pop(name, None)


def _launcher_modules() -> tuple[Any, ...]:
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    return fabric_launcher, trainer_launcher


def _close_process_group(distributed: Any) -> None:
    if distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
