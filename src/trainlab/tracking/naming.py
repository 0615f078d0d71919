"""How a run is told apart in a tracker: its name, its group (the study) and its command.

A job of `python -m trainlab.train -m experiment=deep_relu_init init=xavier_normal,kaiming_normal`
is named after what its sweep chose for it (`init=kaiming_normal`), grouped with the other jobs
of the same launch (`deep_relu_init-2026-11-30_09-12-03`), and its command is its own overrides,
the ones that run this job alone, not the whole multirun's command line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainlab.utils.hydra_job import hydra_overrides, in_multirun
from trainlab.utils.overrides import Override, is_bookkeeping, parse_override

# W&B shows about this many characters of a name in its run table; longer names are cut.
MAX_NAME_LENGTH = 128
# trainlab's run and sweep directories are named by `trainlab_timestamp` (utils/resolvers.py):
# the microseconds keep directories apart, a person needs only the time to the second.
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})_\d{6}$")


def study_name(cfg: DictConfig) -> str:
    """The experiment the run belongs to (`experiment=<name>`), else its task (`train`)."""
    choices = _choices()
    return str(choices.get("experiment") or cfg.get("task_name") or "train")


def run_name(overrides: Iterable[str], swept: set[str] | None, default: str) -> str:
    """`init=kaiming_normal,seed=2`: the overrides that set up this run, without bookkeeping
    (logger, paths, ...); in a multirun only those of the swept keys (`swept`), the ones that
    tell its jobs apart. `default` when none is left (a run with no overrides)."""
    shown = [o for o in overrides if not is_bookkeeping(o)]
    if swept is not None:
        shown = [o for o in shown if parse_override(o).key in swept]
    name = ",".join(o.lstrip("+") for o in shown) or default
    return name if len(name) <= MAX_NAME_LENGTH else name[: MAX_NAME_LENGTH - 1] + "…"


def run_group(cfg: DictConfig) -> str | None:
    """`<experiment or task>-<time>` of a multirun, shared by all its jobs; None for a single run.

    The time is the sweep directory's name (to the second), or the whole name of a directory
    the user named (`hydra.sweep.dir=studies/relu` groups as `<experiment>-relu`)."""
    if not in_multirun():
        return None
    return group_name(study_name(cfg), Path(HydraConfig.get().sweep.dir).name)


def group_name(study: str, sweep_directory: str) -> str:
    """`<study>-<time>` from the sweep directory's name (the study report finds its runs by it)."""
    match = _TIMESTAMP.match(sweep_directory)
    return f"{study}-{match.group(1) if match else sweep_directory}"


def swept_keys() -> set[str] | None:
    """The keys a multirun sweeps (`init` of `init=xavier_normal,kaiming_normal`), or None when
    that is unknown (a single run, or a sweeper that leaves no record of its arguments).

    Each job sees only its own values; the sweep's arguments are in the `multirun.yaml` Hydra's
    basic sweeper writes before the first job, and in `hydra.sweeper.params` (sweeps set in a
    config, e.g. hparams_search=optuna)."""
    if not in_multirun():
        return None
    hydra_cfg = HydraConfig.get()
    params = hydra_cfg.sweeper.get("params") or {}
    keys = {str(key) for key in params}
    record = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
    if record.is_file():
        stat = record.stat()
        keys |= _keys_swept_by(str(record), stat.st_mtime_ns, stat.st_size)
    elif not keys:
        return None
    return keys


@functools.lru_cache(maxsize=8)
def _keys_swept_by(record: str, mtime_ns: int, size: int) -> frozenset[str]:
    """The keys the sweep arguments in a `multirun.yaml` sweep. Read once per version of the file
    (its modification time and size are part of the key): the whole config it holds takes ~30 ms
    to parse, and every job of the multirun asks."""
    arguments = OmegaConf.load(record).hydra.overrides.task
    return frozenset(override.key for override in map(parse_override, arguments) if _is_sweep(override))


# Hydra's sweep functions, besides a comma-separated list: each expands into several jobs
_SWEEP_FUNCTION = re.compile(r"^\s*(range|choice|glob|interval|tag)\(")


def _is_sweep(override: Override) -> bool:
    return override.is_sweep or bool(_SWEEP_FUNCTION.match(override.value or ""))


def job_name(cfg: DictConfig) -> str:
    """The name of this run (see `run_name`) from Hydra's record of the job."""
    return run_name(hydra_overrides(), swept_keys(), default=study_name(cfg))


def job_command() -> list[str]:
    """The arguments that run this job alone (`python -m trainlab.train <these>`): the job's own
    overrides. A multirun's command line holds every job's values and `-m`."""
    return hydra_overrides()


def _choices() -> Mapping[str, str | None]:
    return HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
