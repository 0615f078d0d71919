"""Every run-time patch trainlab makes to another library's internals, in this one module.

DESIGN.md allows replacing a library's internals only where that buys correctness or at least 10%
of a small job. Each entry below says what it replaces, what it buys (measured with
`scripts/bench/library_patches.py` and `scripts/bench/study_overhead.py --patches`; BENCHMARKS.md,
"Patches of other libraries") and the versions of the library it was tested with: outside them it
is not applied (an info message says so), nor where the replaced function's parameters differ from
what the wrapper expects. `tests/test_library_patches.py` holds, for each entry, a test of the
library's own behaviour that the patch relies on, which fails when the library changes under it.

    TRAINLAB_LIBRARY_PATCHES=0       none is applied; the libraries run as they ship
    TRAINLAB_LIBRARY_PATCHES=1       every one (the default, also when unset or empty)
    TRAINLAB_LIBRARY_PATCHES=a,b     only the named ones (to measure each on its own)

`apply()` installs them (once per process: a second call changes nothing), `restore()` puts the
libraries' own functions back, and `applied()` does both around a block. One entry replaces no
function: `lightning_idle_hooks` (at the end) lets Lightning's dispatch skip the per-batch hooks a
callback inherits unchanged; `skip_idle_hooks` applies it to a trainer's callbacks, under the same
setting (and `skip_idle_callback_hooks=false` for one run).
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import logging
import os
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

log = logging.getLogger(__name__)

SETTING = "TRAINLAB_LIBRARY_PATCHES"


@dataclass(frozen=True)
class LibraryPatch:
    """`owner.attribute` of `module` (a function of the library `distribution`, with the
    parameters `parameters`) replaced by `wrap(original)` in the versions `tested`."""

    name: str
    distribution: str
    # versions from (inclusive) .. to (exclusive) that tests/test_library_patches.py passed with;
    # widen it after running them with another version
    tested: tuple[str, str]
    module: str
    owner: str
    attribute: str
    parameters: tuple[str, ...]
    wrap: Callable[[Callable], Callable]

    def owner_object(self) -> Any:
        return getattr(importlib.import_module(self.module), self.owner)


# W&B Launch's job inputs ------------------------------------------------------------------------
# Every `wandb.init` ends with `Run._detect_and_apply_job_inputs`, which imports
# `wandb.sdk.launch.inputs.internal` to apply the inputs that W&B Launch's `manage_config_file` /
# `manage_wandb_config` staged in this process. That import pulls in W&B Launch and W&B's public
# GraphQL API (0.3-0.65 s on a 2-core CPU), the largest part of a process's first W&B run start,
# for runs that stage none. The staged inputs live in that module's `StagedLaunchInputs`
# singleton: while the module is not imported nothing can have been staged, and there is nothing
# to apply. So the check is skipped then, and runs as W&B's own otherwise.

LAUNCH_STAGING_MODULE = "wandb.sdk.launch.inputs.internal"


def applying_staged_launch_inputs_only(apply: Callable) -> Callable:
    @functools.wraps(apply)
    def _detect_and_apply_job_inputs(self) -> None:
        if LAUNCH_STAGING_MODULE in sys.modules:
            apply(self)

    return _detect_and_apply_job_inputs


WANDB_LAUNCH_INPUTS = LibraryPatch(
    name="wandb_launch_inputs",
    distribution="wandb",
    tested=("0.31", "0.32"),
    module="wandb.sdk.wandb_run",
    owner="Run",
    attribute="_detect_and_apply_job_inputs",
    parameters=("self",),
    wrap=applying_staged_launch_inputs_only,
)

# Hydra: each job of a multirun composed once at most ---------------------------------------------
# Hydra's sweepers compose every job's config before a batch starts, so that a bad override fails
# before any job runs (`Sweeper.validate_batch_is_legal`), and the launcher composes it again when
# the job starts (basic, joblib and submitit launchers alike). The wrapper keeps a copy of each job
# config it composes, per loader, and hands it to the next request for the same overrides: the
# check composes, the launcher receives. A copy is handed out once (the launcher writes the job's
# number and directories into it); at most KEPT_SWEEP_CONFIGS wait at a time.
#
# Most jobs of a study differ from each other only in values (`seed=1,2,3`, `optimizer.lr=...`),
# and Hydra composes each of them from the files anyway (0.13-0.15 s on a 2-core CPU: the defaults
# tree and the merged files are most of it). A job whose override lines differ from those of a job
# composed earlier only in plain values is derived from that job's config instead, as Hydra itself
# finishes a composition (`ConfigLoaderImpl._load_configuration_impl`): the value overrides are
# applied last, in order, onto the merged files, by `_apply_overrides_to_config`, and the job's
# override lines written into `hydra.overrides.task` and `hydra.job.override_dirname`. A plain value
# is `key=value` with no prefix (`+`, `++`, `~`) or package, a key that is neither a config group
# nor Hydra's own, a value that is no dict or list (those merge into what is there), and a key that
# no other override of the job touches. Anything else, and any error, composes as Hydra does;
# tests/test_library_patches.py checks derived configs against Hydra's own compositions.

KEPT_SWEEP_CONFIGS = 64
# composed configs that later jobs may be derived from, per loader (newest first); kept beside the
# loader, not on it, so that they stay in the process that composed them (the launchers that
# pickle the loader to their workers send the waiting configs only)
KEPT_COMPOSED_JOBS = 8
_composed_jobs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _ComposedJob:
    """A job config Hydra composed, kept unchanged to derive other jobs' configs from: the config
    name and every override line (Hydra's, then the job's), and for each line its key where it
    is a plain value (None otherwise)."""

    config_name: str | None
    lines: tuple[str, ...]
    plain_keys: tuple[str | None, ...]
    config: Any


def keeping_composed_sweep_configs(compose: Callable) -> Callable:
    @functools.wraps(compose)
    def load_sweep_config(self, master_config, sweep_overrides):
        # kept on the loader itself: the joblib and submitit launchers pickle it, with these, to
        # the processes that ask for the configs
        waiting = self.__dict__.setdefault("_trainlab_composed_configs", {})
        key = tuple(sweep_overrides)
        if key in waiting:
            return waiting.pop(key)
        composed = _composed_jobs.setdefault(self, [])
        config = derived_sweep_config(self, master_config, list(sweep_overrides), composed)
        if config is None:
            config = compose(self, master_config, sweep_overrides)
            composed.insert(0, _composed_job(self, master_config, list(sweep_overrides), config))
            del composed[KEPT_COMPOSED_JOBS:]
        if len(waiting) < KEPT_SWEEP_CONFIGS:
            waiting[key] = copy.deepcopy(config)
        return config

    return load_sweep_config


def derived_sweep_config(loader, master_config, sweep_overrides: list[str], composed: list[_ComposedJob]):
    """The config of the job `sweep_overrides`, derived from a job in `composed` whose override
    lines differ from its own only in plain values; None when there is none (or anything fails:
    Hydra then composes the job, and raises its own errors)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config_name, lines = _job_lines(master_config, sweep_overrides)
    for job in composed:
        if job.config_name != config_name or len(job.lines) != len(lines):
            continue
        changed = [i for i, (old, new) in enumerate(zip(job.lines, lines, strict=True)) if old != new]
        if not all(job.plain_keys[i] for i in changed):
            continue
        try:
            parsed = OverridesParser.create().parse_overrides(lines)
            if not all(_plain_key(loader, parsed[i]) == job.plain_keys[i] for i in changed):
                continue
            return _derive(loader, job, parsed, changed, master_config)
        except Exception:  # composing the job as Hydra does raises what is wrong
            return None
    return None


def _job_lines(master_config, sweep_overrides: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """The config name and the override lines Hydra composes a sweep's job from
    (`ConfigLoaderImpl.load_sweep_config`): the master's Hydra overrides, then the job's."""
    from omegaconf import OmegaConf

    hydra_lines = OmegaConf.to_container(master_config.hydra.overrides.hydra)
    return master_config.hydra.job.config_name, (*hydra_lines, *sweep_overrides)


def _composed_job(loader, master_config, sweep_overrides: list[str], config) -> _ComposedJob:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    config_name, lines = _job_lines(master_config, sweep_overrides)
    plain_keys: tuple[str | None, ...] = (None,) * len(lines)
    # a search path of the primary config's own changes what is a config group: never derive then
    if not OmegaConf.select(config, "hydra.searchpath"):
        parsed = OverridesParser.create().parse_overrides(list(lines))
        plain_keys = tuple(_plain_key(loader, override) for override in parsed)
    return _ComposedJob(config_name, lines, plain_keys, copy.deepcopy(config))


def _plain_key(loader, override) -> str | None:
    """The key `override` sets if it is a plain value (see above), else None."""
    from hydra.core.override_parser.types import OverrideType

    key = override.key_or_group
    if (
        override.type is not OverrideType.CHANGE
        or override.package is not None
        or override.is_sweep_override()
        or override.is_hydra_override()
        or key == "hydra"
        or isinstance(override.value(), dict | list)
        or _group_choice(loader, override)
    ):
        return None
    return key


def _group_choice(loader, override) -> bool:
    """Whether Hydra reads `override` as a config group's choice, not as a value of the config
    (`defaults_list.Overrides`: a dict value is a value even where its key names a group)."""
    return loader.repository.group_exists(override.key_or_group) and not isinstance(override.value(), dict)


def _derive(loader, job: _ComposedJob, parsed: list, changed: list[int], master_config):
    """`job`'s config with the overrides at `changed` of `parsed` applied as Hydra applies them,
    and the job's override lines recorded as Hydra records them; None if another value override
    touches a changed key (a config group's choice does not: its files are merged before)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from omegaconf import OmegaConf, open_dict

    for i in changed:
        key = parsed[i].key_or_group
        for j, other in enumerate(parsed):
            touched = other.key_or_group
            related = touched == key or touched.startswith(f"{key}.") or key.startswith(f"{touched}.")
            if j != i and related and not _group_choice(loader, other):
                return None
    config = copy.deepcopy(job.config)
    ConfigLoaderImpl._apply_overrides_to_config([parsed[i] for i in changed], config)
    app_overrides = [override for override in parsed if not override.is_hydra_override()]
    hydra = config.hydra
    with open_dict(hydra):
        hydra.overrides.task = [override.input_line for override in app_overrides]
        naming = hydra.job.config.override_dirname
        hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=naming.kv_sep,
            item_sep=naming.item_sep,
            exclude_keys=naming.exclude_keys,
        )
        hydra.runtime.cwd = os.getcwd()
        for key in hydra.job.env_copy:
            hydra.job.env_set[key] = os.environ[key]
    OmegaConf.copy_cache(from_config=master_config, to_config=config)
    return config


HYDRA_SWEEP_CONFIGS = LibraryPatch(
    name="hydra_sweep_configs",
    distribution="hydra-core",
    tested=("1.3.2", "1.4"),
    module="hydra._internal.config_loader_impl",
    owner="ConfigLoaderImpl",
    attribute="load_sweep_config",
    parameters=("self", "master_config", "sweep_overrides"),
    wrap=keeping_composed_sweep_configs,
)


PATCHES = {patch.name: patch for patch in (WANDB_LAUNCH_INPUTS, HYDRA_SWEEP_CONFIGS)}
NAMES = tuple(PATCHES)

_originals: dict[str, Any] = {}  # name -> the attribute as the library had it, while patched


def chosen() -> tuple[str, ...]:
    """The patches `TRAINLAB_LIBRARY_PATCHES` lets this process apply."""
    value = os.environ.get(SETTING, "").strip().lower()
    if value in ("", "1", "true", "on", "all"):
        return (*NAMES, IDLE_HOOKS)
    if value in ("0", "false", "off", "none"):
        return ()
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [name for name in names if name not in (*NAMES, IDLE_HOOKS)]
    if unknown:
        raise ValueError(
            f"{SETTING}={value!r}: no patch named {', '.join(unknown)}; choose 0, 1 or a "
            f"comma-separated list of {', '.join((*NAMES, IDLE_HOOKS))}."
        )
    return names


def apply(*names: str) -> list[str]:
    """Install the patches `names` (default: all) that the setting allows, whose library is
    imported in a tested version and whose target is as expected; returns those installed by
    this call (not those already in place)."""
    allowed = chosen()
    installed = []
    for name in names or NAMES:
        if name in _originals or name not in allowed:
            continue
        patch = PATCHES[name]
        if not _fits(patch):
            continue
        owner = patch.owner_object()
        original = owner.__dict__[patch.attribute]
        _originals[name] = original
        setattr(owner, patch.attribute, patch.wrap(original))
        installed.append(name)
    return installed


def restore(*names: str) -> None:
    """Put back the library's own attribute of each patch `names` (default: all) now in place."""
    for name in names or NAMES:
        if name not in _originals:
            continue
        patch = PATCHES[name]
        setattr(patch.owner_object(), patch.attribute, _originals.pop(name))


@contextmanager
def applied(*names: str) -> Iterator[list[str]]:
    """The patches `names` (default: all) in place for the block; those that this block
    installed are restored after it, those in place before stay."""
    installed = apply(*names)
    try:
        yield installed
    finally:
        if installed:  # (restore() with no names restores them all)
            restore(*installed)


def _fits(patch: LibraryPatch) -> bool:
    """Whether `patch` may be installed: its library's version within the tested range, the
    target present with the parameters the wrapper expects. Says why not at info level."""
    from packaging.version import Version

    try:
        installed = Version(version(patch.distribution))
    except PackageNotFoundError:
        return False
    low, high = (Version(v) for v in patch.tested)
    target = f"{patch.module}.{patch.owner}.{patch.attribute}"
    if not low <= installed < high:
        log.info(
            f"{patch.distribution} {installed} is outside the versions {low} to below {high} that "
            f"trainlab's patch of {target} was tested with: it is left as it ships."
        )
        return False
    try:
        function = patch.owner_object().__dict__[patch.attribute]
    except (ImportError, AttributeError, KeyError):
        log.info(f"{patch.distribution} {installed} has no {target}: nothing to patch.")
        return False
    if tuple(inspect.signature(function).parameters) != patch.parameters:
        log.info(
            f"{target} of {patch.distribution} {installed} takes other parameters than "
            f"{patch.parameters}: it is left as it ships."
        )
        return False
    return True


# Lightning's callback hooks that nobody defines ------------------------------------------------
# Lightning calls every callback's per-batch hooks on every batch, including the hooks a callback
# does not define: each such call costs ~3.5 us (a profiler context, the callback's `state_key`
# formatted into a string, the module's current hook name set and reset), and a trainer with the
# default callbacks calls ~80 of them a training step, ~0.25 ms: a sixth of a bare Lightning
# step of a small network on a CPU (scripts/bench/overhead.py --mode host_bound, BENCHMARKS.md).
#
# Lightning skips a hook whose attribute is not callable (`lightning.pytorch.trainer.call.
# _call_callback_hooks`: `fn = getattr(callback, hook_name); if callable(fn)`), so an instance
# attribute `None` over a hook its class inherits unchanged from `Callback` makes that hook free.
# This depends on Lightning's dispatch, not on its API, so it is fenced: it runs only on the
# Lightning versions checked here, only when the dispatch still reads as above, and not at all
# with `skip_idle_callback_hooks=false`; anywhere else every hook is called as Lightning does.
# Nothing changes for the hooks a callback defines, nor for Lightning's other ways of asking
# about hooks (`is_overridden` answers False for None, as it does for the base method).
# Not a replaced function but a dispatch relied upon: `skip_idle_hooks` (called by
# trainlab.builders.build_trainer) is its entry point, under the same setting as the rest.
#
# Two of Lightning's own callbacks define a per-batch hook that does nothing under the settings
# trainlab's defaults give them (`idle_under_settings`): ModelCheckpoint's `on_train_batch_end`
# saves every `every_n_train_steps` steps or `train_time_interval`, and returns at once when both
# are off (its source, 2.6.6; trainlab's best and last checkpoints are written at epoch ends);
# LearningRateMonitor's `on_train_batch_start` logs only when `logging_interval` is not "epoch".
# Each call costs ~10-20 us with Lightning's dispatch; they are skipped like the idle hooks, for
# the settings read when the trainer is built (which nothing changes during a fit).

IDLE_HOOKS = "lightning_idle_hooks"

# The versions whose dispatch was read and measured (2.6.6), back to the 2.x releases that
# dispatch the same way.
LIGHTNING_CHECKED_VERSIONS = ("2.1", "2.7")

# Hooks Lightning calls once per batch (training, validation, test, predict) or several times
# per training step.
PER_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


@functools.cache
def dispatch_skips_non_callables() -> bool:
    """Whether this Lightning skips a hook attribute that is not callable (see the comment above)."""
    import lightning
    from packaging.version import Version

    low, high = (Version(v) for v in LIGHTNING_CHECKED_VERSIONS)
    if not low <= Version(lightning.__version__) < high:
        return False
    try:
        from lightning.pytorch.trainer import call

        source = inspect.getsource(call._call_callback_hooks)
    except (ImportError, AttributeError, OSError, TypeError):
        return False
    return "fn = getattr(callback, hook_name)" in source and "if callable(fn):" in source


def skip_idle_hooks(callbacks: Iterable[Any]) -> list[str]:
    """Make Lightning skip the per-batch hooks each callback inherits unchanged from `Callback`.
    Returns what was skipped ("<callback class>.<hook>"); nothing where the fence says no."""
    import lightning
    import lightning.pytorch as pl

    if IDLE_HOOKS not in chosen():
        return []
    if not dispatch_skips_non_callables():
        log.info(
            f"Lightning {lightning.__version__}: every callback hook is called (skip_idle_hooks is off)."
        )
        return []
    skipped = []
    for callback in callbacks:
        idle = idle_under_settings(callback)
        for hook in PER_BATCH_HOOKS:
            inherited = getattr(type(callback), hook, None) is getattr(pl.Callback, hook)
            if (inherited or hook in idle) and hook not in vars(callback):
                setattr(callback, hook, None)
                skipped.append(f"{type(callback).__name__}.{hook}")
    return skipped


def idle_under_settings(callback: Any) -> tuple[str, ...]:
    """The per-batch hooks of a Lightning callback (ModelCheckpoint, LearningRateMonitor, not a
    subclass that redefines the hook) that do nothing under its settings (see above)."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    kind = type(callback)
    if (
        isinstance(callback, ModelCheckpoint)
        and kind.on_train_batch_end is ModelCheckpoint.on_train_batch_end
    ):
        # the constructor's every_n_train_steps and train_time_interval, as ModelCheckpoint keeps them
        every_n_steps = getattr(callback, "_every_n_train_steps", None)
        interval = getattr(callback, "_train_time_interval", "unknown")
        if every_n_steps == 0 and interval is None:
            return ("on_train_batch_end",)
    if (
        isinstance(callback, LearningRateMonitor)
        and kind.on_train_batch_start is LearningRateMonitor.on_train_batch_start
        and callback.logging_interval == "epoch"
    ):
        return ("on_train_batch_start",)
    return ()
