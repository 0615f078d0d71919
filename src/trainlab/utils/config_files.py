"""Config files read once per process, not once per composition.

Hydra reads every config file a composition needs (42 for trainlab's `train`) into a
`ConfigResult`: the file, its header, its YAML as OmegaConf nodes, its defaults list. Within one
composition it keeps what it read (`CachingConfigRepository`) and hands the same result to every
use; the next composition, the next job of a multirun, reads them all again: 37% of a job's
composition (0.142 -> 0.089 s on a 2-core CPU; BENCHMARKS.md, study throughput).
`read_config_files_once` lets those results outlive the composition, for the process: the same
result object is reused as Hydra itself reuses it within a composition.

They are kept per search path (the config sources, e.g. another `--config-dir`), and only for
files (`file://` and `pkg://` sources): ConfigStore entries (`structured://`) are built in
memory and read anew each time. A config file edited while a multirun runs is read as it was
when the process first read it; Hydra's basic sweeper composes every job before the first one
starts anyway.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

KEPT_SCHEMES = ("file://", "pkg://")

_results: dict[tuple, Any] = {}  # (search path, config path) -> Hydra's ConfigResult


def reading_each_file_once(load: Any) -> Any:
    """`load(repository, config_path)` (Hydra's `CachingConfigRepository.load_config`) that keeps
    each file's result for the process, per search path."""

    @functools.wraps(load)
    def load_config(self, config_path: str):
        key = (search_path(self), config_path)
        if key in _results:
            return _results[key]
        result = load(self, config_path)
        if result is not None and str(result.path).startswith(KEPT_SCHEMES):
            _results[key] = result
        return result

    load_config.reads_each_file_once = True
    return load_config


def search_path(repository: Any) -> tuple[tuple[str, str], ...]:
    """The repository's config sources, in order: (scheme, path) of each."""
    return tuple((source.scheme(), str(source.path)) for source in repository.get_sources())


def read_config_files_once() -> None:
    """Wrap Hydra's `CachingConfigRepository.load_config` (once per process); leave it as it is,
    with a debug message, if this Hydra's differs from what the wrapper expects."""
    from hydra._internal.config_repository import CachingConfigRepository

    from trainlab.utils.library_patches import enabled

    if not enabled("hydra_config_files"):
        return
    load = CachingConfigRepository.load_config
    if getattr(load, "reads_each_file_once", False):
        return
    if list(inspect.signature(load).parameters) != ["self", "config_path"]:
        log.debug(
            "Hydra's CachingConfigRepository.load_config has another signature: files are read per composition."
        )
        return
    CachingConfigRepository.load_config = reading_each_file_once(load)
