"""Registers `hydra/launcher=joblib`, `hydra/launcher=submitit_local` and `hydra/launcher=vectorised`
as trainlab's launchers.

The plugins store their own configs under these names when Hydra imports them, and Hydra imports
every module of `hydra_plugins` in an order that depends on `sys.path` (the plugins' directory
before or after trainlab's). A search path plugin runs once all of them are imported, before any
config is composed: storing trainlab's configs here makes them the ones the names select,
whatever the order. The search path itself is left as it is.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin

from hydra_plugins.trainlab_launchers import joblib_launcher, submitit_launcher, vectorised_launcher


class TrainlabLaunchers(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for module in (joblib_launcher, submitit_launcher, vectorised_launcher):
            if module.CONFIG is not None:  # the plugin is installed
                name, node = module.CONFIG
                ConfigStore.instance().store(
                    group="hydra/launcher", name=name, node=node, provider="trainlab"
                )
