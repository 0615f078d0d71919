"""The unit every network is built from: weight layer, then norm and activation in either order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from trainlab.layers.traits import removes_channel_mean
from trainlab.norm.factories import NormFactory

Position = Literal["pre_act", "post_act"]
POSITIONS = ("pre_act", "post_act")


def width_multiplier(activation: nn.Module) -> int:
    """How many inputs an activation consumes per output unit (k for a k-piece Maxout, else 1)."""
    return int(getattr(activation, "width_multiplier", 1))


def check_dropout(probability: float) -> float:
    """model.dropout must be a drop probability in [0, 1) (1 would drop every unit)."""
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 <= probability < 1:
        raise ValueError(f"model.dropout={probability!r} must be a probability in [0, 1) (0 = no dropout).")
    return float(probability)


def dropout_layer(probability: float, spatial: bool) -> list[nn.Module]:
    """No module at all for 0 (so a network without dropout keeps its exact layout), else
    `nn.Dropout2d` for feature maps or `nn.Dropout` for vectors.

    Dropout2d drops whole channels: neighbouring pixels of a feature map are strongly
    correlated, so dropping single pixels barely removes information and regularises little
    (Tompson et al. 2015, "Efficient object localization using convolutional networks").
    """
    if check_dropout(probability) == 0:
        return []
    return [nn.Dropout2d(probability) if spatial else nn.Dropout(probability)]


def layer_block(
    make_layer: Callable[[int, bool], nn.Module],
    out_features: int,
    norm: NormFactory,
    activation: Callable[[], nn.Module],
    position: Position,
    spatial: bool,
    dropout: float = 0.0,
) -> nn.Sequential:
    """`layer -> norm -> act` (pre_act, as Ioffe & Szegedy recommend) or `layer -> act -> norm`,
    then dropout with probability `dropout` where it is > 0 (see `dropout_layer`).

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
    layers = [layer for layer in layers if not isinstance(layer, nn.Identity)]
    return nn.Sequential(*layers, *dropout_layer(dropout, spatial))
