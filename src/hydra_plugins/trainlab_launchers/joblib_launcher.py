"""`hydra/launcher=joblib`: Hydra's joblib launcher, each job in a child of its loky worker."""

# No `from __future__ import annotations`: Hydra executes this module before it is in sys.modules,
# where dataclasses look string annotations up.

from dataclasses import dataclass, field

from hydra_plugins.trainlab_launchers import TRAINING_STACK, IsolatesJobs

try:
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf as _PluginConf
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _PluginLauncher
except ImportError:  # the `launchers` extra is not installed
    _PluginLauncher = _PluginConf = None


if _PluginLauncher is not None:

    class JoblibLauncher(IsolatesJobs, _PluginLauncher):
        """joblib.Parallel over loky workers, as Hydra's; `isolate_jobs`: each job in a forked
        child of its worker, so that one job killed by the OS does not break loky's pool and
        kill its siblings (see trainlab.run.isolation)."""

    @dataclass
    class JoblibLauncherConf(_PluginConf):
        """The plugin's options, plus `isolate_jobs` (false: the plugin's own behaviour)."""

        _target_: str = f"{__name__}.JoblibLauncher"
        isolate_jobs: bool = True
        # imported by each worker once, before its first job: its jobs start with them imported
        preload: list[str] = field(default_factory=lambda: list(TRAINING_STACK))

    CONFIG = ("joblib", JoblibLauncherConf)  # hydra/launcher/joblib (search_path.py)

else:  # without the plugin, Hydra says the launcher's name is unknown, as before
    CONFIG = None
