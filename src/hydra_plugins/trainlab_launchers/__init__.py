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

# What a job of `python -m trainlab.train` imports (torch, Lightning, the data and model code),
# for `hydra.launcher.preload`
TRAINING_STACK = ("trainlab.builders", "trainlab.run.summary")
