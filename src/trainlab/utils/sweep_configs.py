"""Each job of a multirun composed once, not twice.

Hydra's sweepers compose every job's config before a batch of jobs starts, so that a bad
override fails before any job runs (`Sweeper.validate_batch_is_legal`), and the launcher then
composes each one again when its job starts (the basic, joblib and submitit launchers alike).
For trainlab's config a composition takes 0.135 s on a 2-core CPU, a seventh of a small study
job (scripts/bench/study_overhead.py). `compose_each_job_once` makes Hydra's config loader keep
a copy of each job config it composes and hand that copy to the next request for the same
overrides: the check composes, the launcher receives.

Each copy is handed out once, to a caller that is the only one to hold it (the launcher writes
the job's number and directories into it); a copy is made when the config is composed (7 ms),
and at most KEPT_CONFIGS copies wait at a time (the jobs of a larger batch beyond them are
composed again). A request that was not composed before (e.g. a sweeper that does not check)
composes as Hydra does.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

KEPT_CONFIGS = 64


def keeping_composed_configs(compose: Callable) -> Callable:
    """`compose(loader, master_config, sweep_overrides)` (Hydra's `load_sweep_config`) that keeps
    a copy of each config it composes, per loader, and hands it to the next request for the same
    overrides instead of composing again."""

    @functools.wraps(compose)
    def load_sweep_config(self, master_config, sweep_overrides):
        kept = self.__dict__.setdefault("_trainlab_composed_configs", {})
        key = tuple(sweep_overrides)
        if key in kept:
            return kept.pop(key)
        config = compose(self, master_config, sweep_overrides)
        if len(kept) < KEPT_CONFIGS:
            kept[key] = copy.deepcopy(config)
        return config

    load_sweep_config.keeps_composed_configs = True
    return load_sweep_config


def compose_each_job_once() -> None:
    """Wrap Hydra's `ConfigLoaderImpl.load_sweep_config` (once per process); leave it as it is,
    with a debug message, if this Hydra's differs from what the wrapper expects."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from trainlab.utils.library_patches import enabled

    if not enabled("hydra_sweep_configs"):
        return
    compose = ConfigLoaderImpl.load_sweep_config
    if getattr(compose, "keeps_composed_configs", False):
        return
    if list(inspect.signature(compose).parameters) != ["self", "master_config", "sweep_overrides"]:
        log.debug("Hydra's load_sweep_config has another signature: each job is composed twice.")
        return
    ConfigLoaderImpl.load_sweep_config = keeping_composed_configs(compose)
