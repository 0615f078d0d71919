"""The maths every initialisation scheme shares: fans, gains and one variance-scaling draw.

As in timm's `variance_scaling_`, LeCun, Glorot/Xavier and He/Kaiming initialisation are one
formula, Var[W] = scale / fan, with a different scale and fan:

    scheme            scale        fan                      keeps constant across layers
    lecun_normal      1            fan_in                   forward variance (unit-slope units)
    xavier_*          1 (gain**2)  (fan_in + fan_out) / 2   a compromise of forward and backward
    kaiming_*         gain**2      fan_in | fan_out         forward | backward variance under the
                                                            activation (gain**2 = 2 for ReLU)

A uniform draw U(-b, b) has variance b**2 / 3, so it takes b = sqrt(3 * scale / fan): He's ReLU
bound is sqrt(6 / fan_in), Glorot's is sqrt(6 / (fan_in + fan_out)).

Schemes act on the network's weight layers (`WEIGHT_LAYERS`); norm layers, pooling and
activations are left as they are.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

from trainlab.layers.hooks import batch_inputs
from trainlab.layers.traits import init_nonlinearity
from trainlab.layers.weights import weight_layers
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "uniform", "truncated_normal"]
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
# Names torch.nn.init.calculate_gain knows, plus `auto`: read it from the network's activations.
NONLINEARITIES = ("auto", "linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
# Standard deviation of a standard normal truncated to [-2, 2].
_TRUNCATED_STD = 0.87962566103423978
# Which nonlinearity an activation module stands for (ReLU-shaped units take ReLU's gain; a module
# may declare its own `init_nonlinearity`, as Maxout does): trainlab.layers.traits.init_nonlinearity.

# --- checks -----------------------------------------------------------------------------------


def check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {choices}.")


def check_positive(key: str, value: float, hint: str = "") -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value!r} must be > 0{hint}.")


# --- which layers, which fans -----------------------------------------------------------------


def fan_in_and_fan_out(weight: torch.Tensor) -> tuple[int, int]:
    """fan_in: inputs that reach one output unit; fan_out: outputs one input unit reaches.

    Linear (out, in): (in, out). Conv (out, in / groups, *kernel): (in / groups * k, out * k)
    with k the kernel's area or volume, the same convention as torch.nn.init.
    """
    if weight.dim() < 2:
        raise ValueError(
            f"fan_in and fan_out need a weight with 2 or more dimensions, got shape {tuple(weight.shape)}."
        )
    receptive_field = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


# --- the one core -----------------------------------------------------------------------------


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
) -> torch.Tensor:
    """Fill `tensor` in place with zero-mean values of variance `scale / fan`.

    mode: fan_in, fan_out or fan_avg = (fan_in + fan_out) / 2.
    distribution: normal N(0, var); uniform U(-b, b) with b = sqrt(3 var); truncated_normal: a
    normal cut at two standard deviations, widened so that the variance is still `var`.
    """
    check_positive("init.scale", scale)
    check_choice("init.mode", mode, MODES)
    check_choice("init.distribution", distribution, DISTRIBUTIONS)
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(scale / fan)
    with torch.no_grad():
        if distribution == "normal":
            return tensor.normal_(0.0, std)
        if distribution == "uniform":
            bound = math.sqrt(3.0) * std
            return tensor.uniform_(-bound, bound)
        wide = std / _TRUNCATED_STD
        return nn.init.trunc_normal_(tensor, 0.0, wide, -2 * wide, 2 * wide)


def init_layers(
    network: nn.Module, init_weight: Callable[[torch.Tensor], object], bias: float | None
) -> list[tuple[str, nn.Module]]:
    """Apply `init_weight` to every weight layer's weight and set its bias to `bias` (None keeps it)."""
    layers = weight_layers(network)
    if not layers:
        raise ConfigError(
            f"init: {type(network).__name__} has no Linear or Conv layer for the scheme to initialise."
        )
    with torch.no_grad():
        for _, layer in layers:
            init_weight(layer.weight)
            if bias is not None and layer.bias is not None:
                layer.bias.fill_(bias)
    return layers


def set_biases(network: nn.Module, bias: float | None) -> None:
    """Every weight layer's bias to `bias` (None: leave them)."""
    if bias is None:
        return
    with torch.no_grad():
        for _, layer in weight_layers(network):
            if layer.bias is not None:
                layer.bias.fill_(bias)


# --- gains ------------------------------------------------------------------------------------


def network_nonlinearity(network: nn.Module) -> tuple[str, float | None]:
    """The nonlinearity of the network's activation modules; 'linear' when it has none.

    Networks built by trainlab have one activation kind. Where there are several, the most
    frequent wins and a warning says so: set `init.nonlinearity` to choose.
    """
    found = Counter(nl for m in network.modules() if (nl := init_nonlinearity(m)) is not None)
    if not found:
        return "linear", None
    (name, param), _ = found.most_common(1)[0]
    if len(found) > 1:
        log.warning(
            f"init: the network mixes activations {sorted(found, key=str)}; gains use {name!r}"
            f"{'' if param is None else f' (slope {param})'}. Set init.nonlinearity=<name> to choose."
        )
    return name, param


def gain(network: nn.Module, nonlinearity: str | None = "auto") -> float:
    """torch.nn.init.calculate_gain for `nonlinearity`, or for the network's activation ('auto').

    ReLU: sqrt(2); Leaky ReLU with slope a: sqrt(2 / (1 + a**2)), the slope read from the network
    (0.01 when it has no LeakyReLU); tanh: 5/3; sigmoid and linear: 1; SELU: 3/4.
    """
    nonlinearity = nonlinearity or "auto"
    check_choice("init.nonlinearity", nonlinearity, NONLINEARITIES)
    if nonlinearity == "auto":
        name, param = network_nonlinearity(network)
    else:
        name, param = nonlinearity, None
        if name == "leaky_relu":
            slopes = [m.negative_slope for m in network.modules() if isinstance(m, nn.LeakyReLU)]
            param = float(slopes[0]) if slopes else None
    return nn.init.calculate_gain(name, param)


# --- data for the data-driven schemes ------------------------------------------------------------


def first_inputs(batches: Iterable, device: torch.device) -> torch.Tensor:
    try:
        batch = next(iter(batches))
    except StopIteration:
        raise ConfigError("init: the training data has no batch to initialise from.") from None
    return batch_inputs(batch).to(device)
