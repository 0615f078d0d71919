"""Hyperparameter search on Optuna: the search space read from Hydra's sweep syntax, the study
on a storage that several launches share, and what each finished job tells the study.

The Hydra sweeper that drives it is `hydra_plugins.trainlab_optuna_sweeper` (Hydra finds
sweepers only under `hydra_plugins`); the job side is `trainlab.callbacks.optuna_pruning`.
Optuna is imported only when a search runs.
"""
