"""`hydra/launcher=submitit_local`: Hydra's submitit launcher on this machine, each job in a child
of its submitit process."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.trainlab_launchers import TRAINING_STACK

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf as _PluginConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _PluginLauncher
except ImportError:  # the `launchers` extra is not installed
    _PluginLauncher = _PluginConf = None


if _PluginLauncher is not None:

    class SubmititLocalLauncher(_PluginLauncher):
        """submitit's local executor, as Hydra's; `isolate_jobs`: each job in a forked child of
        its submitit process, which records the job `killed` when the OS kills it, instead of
        leaving no result (submitit's `UncompletedJobError` ends the multirun without its report;
        see trainlab.run.isolation)."""

        def __init__(
            self, isolate_jobs: bool = True, preload: Sequence[str] = (), **submitit_options: Any
        ) -> None:
            super().__init__(**submitit_options)
            self.isolate_jobs, self.preload = isolate_jobs, [str(name) for name in preload]

        def setup(
            self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
        ) -> None:
            if self.isolate_jobs:
                from trainlab.run.isolation import JobInChildProcess

                task_function = JobInChildProcess(task_function, self.preload)
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    @dataclass
    class SubmititLocalLauncherConf(_PluginConf):
        """The plugin's options, plus `isolate_jobs` (false: the plugin's own behaviour)."""

        _target_: str = f"{__name__}.SubmititLocalLauncher"
        isolate_jobs: bool = True
        # imported by each worker once, before its first job: its jobs start with them imported
        preload: list[str] = field(default_factory=lambda: list(TRAINING_STACK))

    CONFIG = (
        "submitit_local",
        SubmititLocalLauncherConf,
    )  # registered as hydra/launcher/submitit_local (see search_path.py)

else:  # without the plugin, Hydra says the launcher's name is unknown, as before
    CONFIG = None
