"""Initialisation schemes: one function each, applied to a built network.

A scheme is a function `scheme(network, **knobs)` named by `conf/init/<name>.yaml`
(`_target_` + `_partial_: true` + knobs). A scheme that needs data declares it by name:
a parameter `batches` receives the training DataLoader (batches of (inputs, targets)), a
parameter `datamodule` the set-up DataModule. A scheme may return a dict of numbers (e.g.
LSUV's per-layer variances); `apply_init` returns them, and the run records them in its
summary.json (`init_stats`) and loggers (`init/...`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from hydra.utils import instantiate
from torch import nn

from trainlab.init.core import fan_in_and_fan_out, gain, variance_scaling_
from trainlab.layers.weights import weight_layers
from trainlab.utils.config import ConfigError, require_partial

log = logging.getLogger(__name__)

__all__ = ["apply_init", "fan_in_and_fan_out", "gain", "variance_scaling_", "weight_layers"]


def _data_arguments(scheme: Callable, datamodule: Any, name: str) -> dict[str, Any]:
    """The data a scheme asks for by parameter name: `batches` and/or `datamodule`."""
    wanted = [p for p in ("batches", "datamodule") if p in inspect.signature(scheme).parameters]
    if wanted and datamodule is None:
        raise ConfigError(f"init {name} needs training data ({', '.join(wanted)}), and none was given.")
    arguments = {}
    if "batches" in wanted:
        # as the network takes them: trainlab's DataModule ships uint8 images and normalises them
        # where the model is (network_batches does it here); another DataModule's as they come
        network_batches = getattr(datamodule, "network_batches", None)
        arguments["batches"] = network_batches() if network_batches else datamodule.train_dataloader()
    if "datamodule" in wanted:
        arguments["datamodule"] = datamodule
    return arguments


def apply_init(network: nn.Module, init_cfg: Mapping | Callable | None, datamodule: Any = None) -> dict:
    """Apply the `init` config (or a scheme function) to `network`; return the scheme's statistics.

    `datamodule` provides data to the schemes that declare `batches` or `datamodule`.
    """
    if init_cfg is None:
        return {}
    require_partial("init", init_cfg)
    scheme = init_cfg if callable(init_cfg) else instantiate(init_cfg)
    name = (
        init_cfg.get("_target_", "")
        if isinstance(init_cfg, Mapping)
        else getattr(getattr(scheme, "func", scheme), "__name__", "")
    )
    stats = scheme(network, **_data_arguments(scheme, datamodule, name)) or {}
    if stats:
        log.info(f"init {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    return dict(stats)
