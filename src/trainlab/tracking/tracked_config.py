"""The config a tracker shows for a run: the study axes' options, the seed, then every knob.

    {"experiment": "deep_relu_init", "data": "digits", "model": "mlp", "init": "kaiming_normal",
     ..., "seed": 2, "hparams": {"model": {"depth": 30, "width": 128}, "optimizer": {"lr": 0.01, ...}, ...}}

A dashboard groups and draws parallel coordinates on the option names (`init`, `norm`, ...: Hydra's
choices, plain strings), and on the knobs under `hparams`. Nested dicts, not dotted keys: W&B's
public API filters nested config keys (`{"config.hparams.model.width": 128}`) but finds nothing
for a key that holds a dot (`"model.width"`, wandb/wandb#3087), and its web UI shows either as
`hparams.model.width`. The knobs have their own key because an axis's name (`model`) holds its
option (`mlp`), so its knobs cannot sit under the same key.

Plumbing (where files go, Hydra, loggers, callbacks, progress and checkpoint switches) is left out:
it does not change what a run computes, and the whole config is in `<run dir>/.hydra/config.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from trainlab.utils.config import STUDY_AXES, plain

# The option names a dashboard groups by, in the order a person reads a study.
AXES = ("experiment", *STUDY_AXES)

# Top-level settings about how a run is run, resumed or recorded, not what it computes.
_PLUMBING = {
    "task_name",  # the run's W&B job_type
    "tags",  # the run's W&B tags
    "paths",
    "hydra",
    "logger",
    "callbacks",
    "ckpt_path",
    "trusted_targets",
    "test",
    "skip_completed",
    "num_threads",
    "compile",
    "channels_last",
    "optimized_metric",
}
# Settings inside a group that are plumbing too; `data.augment` repeats the `augment` group.
_PLUMBING_KNOBS = {
    "data": {"num_workers", "pin_memory", "augment"},
    "augment": {"cache_dir", "normalise_on"},
    "trainer": {
        "default_root_dir",
        "enable_model_summary",
        "enable_progress_bar",
        "enable_checkpointing",
        "log_every_n_steps",
    },
}
# Hydra's instructions to `instantiate`, not settings.
_HYDRA_FLAGS = {"_partial_", "_recursive_", "_convert_"}


def tracked_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as a dashboard should see it (see the module's docstring)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    tracked: dict[str, Any] = {axis: choices.get(axis) for axis in AXES}
    tracked["seed"] = cfg.get("seed")
    hparams = {}
    for key in cfg:
        if key in _PLUMBING or key == "seed":
            continue
        value = plain(cfg[key])  # resolved node by node: the plumbing's interpolations never are
        if isinstance(value, Mapping):
            # A group's `_target_` is what its option name already says; a node that is no
            # group's option (`module`) keeps it: it names the code that runs.
            value = _knobs(value, drop=_PLUMBING_KNOBS.get(key, set()), keep_target=key not in choices)
            if "name" in value and value["name"] == choices.get(
                key
            ):  # augment.name, transfer.name: the option again
                value.pop("name")
        if value is not None and value != {}:  # `module: null`, `activation: {}`: nothing to compare
            hparams[key] = value
    tracked["hparams"] = hparams
    return tracked


def _knobs(node: Mapping, drop: set[str], keep_target: bool) -> dict[str, Any]:
    knobs = {}
    for key, value in node.items():
        if key in drop or key in _HYDRA_FLAGS or (key == "_target_" and not keep_target):
            continue
        if isinstance(value, Mapping):  # e.g. data.source: its `_target_` is the data option's too
            value = _knobs(value, drop=set(), keep_target=keep_target)
            if not value:
                continue
        knobs[key] = value
    return knobs
