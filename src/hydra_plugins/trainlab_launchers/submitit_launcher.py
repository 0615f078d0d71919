"""`hydra/launcher=submitit_local`: Hydra's submitit launcher on this machine, each job in a child
of its submitit process."""

from dataclasses import dataclass, field

from hydra_plugins.trainlab_launchers import TRAINING_STACK, IsolatesJobs

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf as _PluginConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _PluginLauncher
except ImportError:  # the `launchers` extra is not installed
    _PluginLauncher = _PluginConf = None


if _PluginLauncher is not None:

    class SubmititLocalLauncher(IsolatesJobs, _PluginLauncher):
        """submitit's local executor, as Hydra's; `isolate_jobs`: each job in a forked child of
        its submitit process, which records the job `killed` when the OS kills it, instead of
        leaving no result (submitit's `UncompletedJobError` ends the multirun without its report;
        see trainlab.run.isolation)."""

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
