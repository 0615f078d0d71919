"""Named initialisation schemes: one small function each, one `conf/init/<name>.yaml` each.

A scheme is `scheme(network, **knobs)`: it re-initialises the network's weight layers (Linear,
Conv) in place and sets their biases to `bias`; norm layers keep their gamma = 1 and beta = 0.
The variance formulas all go through `variance_scaling_` (trainlab.init.core).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from trainlab.init.core import (
    Distribution,
    Mode,
    check_choice,
    check_positive,
    gain,
    init_layers,
    set_biases,
    variance_scaling_,
)

FanMode = Literal["fan_in", "fan_out"]


def framework_default(network: nn.Module, bias: float | None = None) -> None:
    """Keep PyTorch's own initialisation: weights U(-b, b) with b = 1/sqrt(fan_in) (kaiming_uniform_
    with a = sqrt(5)), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)). `bias`: null keeps PyTorch's bias,
    a number sets every bias to it."""
    set_biases(network, bias)


def zeros(network: nn.Module, bias: float = 0.0) -> None:
    """All weights 0. Every unit of a layer computes the same thing and, with ReLU, passes no
    gradient back: the baseline that shows why weights must be random (symmetry breaking)."""
    init_layers(network, nn.init.zeros_, bias)


def constant(network: nn.Module, value: float = 0.01, bias: float = 0.0) -> None:
    """All weights `value`. Units of a layer stay identical for ever (same forward, same gradient):
    symmetry is never broken, whatever the value."""
    init_layers(network, lambda w: nn.init.constant_(w, value), bias)


def normal(network: nn.Module, std: float = 0.01, bias: float = 0.0) -> None:
    """N(0, std**2) whatever the layer's size (e.g. std = 0.01 in Krizhevsky et al. 2012). Nothing is
    kept constant: a layer multiplies the signal's variance by fan_in * std**2."""
    check_positive("init.std", std, " (std=0 is init=zeros)")
    init_layers(network, lambda w: nn.init.normal_(w, 0.0, std), bias)


def uniform(network: nn.Module, a: float = 0.05, bias: float = 0.0) -> None:
    """U(-a, a), variance a**2 / 3, whatever the layer's size: like `normal`, nothing is kept
    constant."""
    check_positive("init.a", a, " (the bound of U(-a, a))")
    init_layers(network, lambda w: nn.init.uniform_(w, -a, a), bias)


def variance_scaling(
    network: nn.Module,
    scale: float = 1.0,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    bias: float = 0.0,
) -> None:
    """Var[W] = scale / fan, the family every scheme below belongs to (timm's variance_scaling_)."""
    init_layers(network, lambda w: variance_scaling_(w, scale, mode, distribution), bias)


def xavier_uniform(network: nn.Module, nonlinearity: str = "linear", bias: float = 0.0) -> None:
    """Glorot & Bengio 2010, eq. 16: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).

    Var = gain**2 * 2 / (fan_in + fan_out): the compromise between keeping the forward
    activations' variance (1/fan_in) and the backward gradients' variance (1/fan_out) constant, for
    units linear near 0 (tanh, softsign). The paper has gain 1 (`nonlinearity: linear`);
    `nonlinearity: auto` takes torch's gain for the network's activation.
    """
    scale = gain(network, nonlinearity) ** 2
    init_layers(network, lambda w: variance_scaling_(w, scale, "fan_avg", "uniform"), bias)


def xavier_normal(network: nn.Module, nonlinearity: str = "linear", bias: float = 0.0) -> None:
    """Glorot & Bengio 2010 as a normal: N(0, gain**2 * 2 / (fan_in + fan_out)); the same
    forward/backward compromise as `xavier_uniform`."""
    scale = gain(network, nonlinearity) ** 2
    init_layers(network, lambda w: variance_scaling_(w, scale, "fan_avg", "normal"), bias)


def kaiming_uniform(
    network: nn.Module, mode: FanMode = "fan_in", nonlinearity: str = "auto", bias: float = 0.0
) -> None:
    """He et al. 2015 ("Delving deep into rectifiers"): U(-b, b), b = gain * sqrt(3 / fan).

    For ReLU, gain**2 = 2 and b = sqrt(6 / fan_in); Leaky ReLU with slope a: gain**2 = 2 / (1 + a**2).
    mode=fan_in keeps the forward activations' variance constant across layers (eq. 10),
    mode=fan_out the backward gradients' variance (eq. 14). The gain is read from the network's
    activation unless `nonlinearity` names one.
    """
    check_choice("init.mode", mode, ("fan_in", "fan_out"))
    scale = gain(network, nonlinearity) ** 2
    init_layers(network, lambda w: variance_scaling_(w, scale, mode, "uniform"), bias)


def kaiming_normal(
    network: nn.Module, mode: FanMode = "fan_in", nonlinearity: str = "auto", bias: float = 0.0
) -> None:
    """He et al. 2015: N(0, gain**2 / fan), std = sqrt(2 / fan_in) for ReLU; fan_in keeps the
    forward variance, fan_out the backward variance (see `kaiming_uniform`)."""
    check_choice("init.mode", mode, ("fan_in", "fan_out"))
    scale = gain(network, nonlinearity) ** 2
    init_layers(network, lambda w: variance_scaling_(w, scale, mode, "normal"), bias)


def lecun_normal(network: nn.Module, bias: float = 0.0) -> None:
    """LeCun et al. 1998 ("Efficient BackProp", sec. 4.6): N(0, 1 / fan_in). Keeps the forward
    variance constant for units of slope 1 at 0 (LeCun's scaled tanh, SELU)."""
    init_layers(network, lambda w: variance_scaling_(w, 1.0, "fan_in", "normal"), bias)


def orthogonal(network: nn.Module, nonlinearity: str = "auto", bias: float = 0.0) -> None:
    """Saxe et al. 2014 ("Exact solutions to the nonlinear dynamics of learning in deep linear
    networks"): W = gain * Q with Q a random orthogonal matrix (a conv's weight flattened to
    out x in*k). Every singular value is `gain`, so a deep linear network keeps the norm of every
    signal, forward and backward, exactly. The gain (ReLU: sqrt(2)) makes up for the activation's
    loss; `nonlinearity: linear` is the paper's gain 1.
    """
    g = gain(network, nonlinearity)
    init_layers(network, lambda w: nn.init.orthogonal_(w, g), bias)
