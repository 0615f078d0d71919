"""The unit every network is built from: weight layer, then norm and activation in either order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from trainlab.models.traits import removes_channel_mean
from trainlab.norm.factories import NormFactory

Position = Literal["pre_act", "post_act"]
POSITIONS = ("pre_act", "post_act")


def width_multiplier(activation: nn.Module) -> int:
    """How many inputs an activation consumes per output unit (k for a k-piece Maxout, else 1)."""
    return int(getattr(activation, "width_multiplier", 1))


def layer_block(
    make_layer: Callable[[int, bool], nn.Module],
    out_features: int,
    norm: NormFactory,
    activation: Callable[[], nn.Module],
    position: Position,
    spatial: bool,
) -> nn.Sequential:
    """`layer -> norm -> act` (pre_act, as Ioffe & Szegedy recommend) or `layer -> act -> norm`.

    `make_layer(out_features, bias)` builds the weight layer. A bias right before a norm
    that subtracts each channel's mean is cancelled by it, so it is dropped there.
    """
    if position not in POSITIONS:
        raise ValueError(f"norm.position={position!r} is not one of {list(POSITIONS)}.")
    act = activation()
    pieces = width_multiplier(act)
    if position == "pre_act":
        norm_layer = norm(out_features * pieces, spatial)
        layers = [make_layer(out_features * pieces, not removes_channel_mean(norm_layer)), norm_layer, act]
    else:
        norm_layer = norm(out_features, spatial)
        layers = [make_layer(out_features * pieces, True), act, norm_layer]
    return nn.Sequential(*(layer for layer in layers if not isinstance(layer, nn.Identity)))
