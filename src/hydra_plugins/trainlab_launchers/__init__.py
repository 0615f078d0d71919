"""trainlab's launchers: Hydra's joblib and submitit_local launchers, each job in a process of its own.

`hydra/launcher=joblib` and `hydra/launcher=submitit_local` (conf/hydra/launcher/) select these
subclasses of the plugins' own launchers. They change one thing: the task function runs in a
forked child of the worker (trainlab.run.isolation.JobInChildProcess), so that a job killed by
the operating system (the out-of-memory killer's SIGKILL) is recorded `killed` while the other
jobs go on and the study report is written. `hydra.launcher.isolate_jobs=false` gives the
plugins' own behaviour. Every other option is the plugin's.

Hydra instantiates launchers only from the `hydra_plugins` package, hence this place. Each
module defines its launcher only when its plugin (the `launchers` extra) is installed.
"""

# No `from __future__ import annotations`: Hydra executes these modules before they are in
# sys.modules, where dataclasses look string annotations up.

from collections.abc import Sequence
from typing import Any

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# What a job of `python -m trainlab.train` imports (torch, Lightning, the data and model code),
# for `hydra.launcher.preload`
TRAINING_STACK = ("trainlab.builders", "trainlab.run.summary")


class IsolatesJobs:
    """What both launchers add to their plugin's (put first among the bases): `isolate_jobs`, each
    job in a forked child of its worker, and `preload`, modules each worker imports once before
    its first job. Every other option goes on to the plugin's launcher."""

    def __init__(self, isolate_jobs: bool = True, preload: Sequence[str] = (), **plugin_options: Any) -> None:
        super().__init__(**plugin_options)
        self.isolate_jobs, self.preload = isolate_jobs, [str(name) for name in preload]

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if self.isolate_jobs:
            from trainlab.run.isolation import JobInChildProcess

            task_function = JobInChildProcess(task_function, self.preload)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
