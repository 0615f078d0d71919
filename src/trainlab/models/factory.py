"""Compose a network from the independent study axes: model x norm x activation."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate
from torch import nn


def build_network(
    model: Mapping,
    norm: Mapping,
    activation: Mapping,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> nn.Module:
    """Instantiate `model` with the norm factory, activation factory and placement it needs.

    All arguments are plain config mappings (`_target_` + arguments), so a checkpoint can
    rebuild the very same network from its hyperparameters.
    """
    norm = dict(norm)
    position = norm.pop("position", "pre_act")
    return instantiate(
        dict(model),
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        norm=instantiate(norm),
        activation=instantiate(dict(activation)),
        position=position,
    )
