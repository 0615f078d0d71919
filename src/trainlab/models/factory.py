"""Compose a network from the independent study axes: model x norm x activation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from trainlab.utils.config import require_partial

# Keys of the `model` config that say where weights come from, not how the network is built.
# The network is built without them (also when a checkpoint is reloaded: the checkpoint has the
# weights); trainlab.transfer.pretrained.load_pretrained loads them once, after the init scheme.
WEIGHT_SOURCES = ("pretrained", "pretrained_file", "pretrained_ckpt", "pretrained_depth")


def network_config(model: Mapping | None) -> dict[str, Any] | None:
    """The `model` config without its weight sources: the arguments of the model's `_target_`."""
    if model is None:
        return None
    return {k: v for k, v in dict(model).items() if k not in WEIGHT_SOURCES}


def build_network(
    model: Mapping,
    norm: Mapping,
    activation: Mapping,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> nn.Module:
    """Instantiate `model` with the norm factory, activation factory and placement it needs.

    All arguments are plain config mappings (`_target_` + arguments), so a checkpoint can
    rebuild the very same network from its hyperparameters. No weights are loaded here (see
    WEIGHT_SOURCES).
    """
    require_partial("norm", norm)
    require_partial("activation", activation)
    norm = dict(norm)
    position = norm.pop("position", "pre_act")
    try:
        return instantiate(
            network_config(model),
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            norm=instantiate(norm),
            activation=instantiate(dict(activation)),
            position=position,
        )
    except InstantiationException as error:
        # The model's own message ("model=mlp needs width >= 1 ...") is what the user needs,
        # not Hydra's wrapper around it.
        if isinstance(error.__cause__, ValueError | TypeError):
            raise error.__cause__ from None
        raise
