"""What a module is, for the parts of trainlab that treat modules by kind: one function per question.

    question                      asked by                                    a module may declare
    init_nonlinearity(m)          init schemes' gains (init/core.py)          init_nonlinearity = 'relu'
    is_rectifier(m)               layer statistics: `dead` units              is_rectifier = True
    saturation_bounds(m)          layer statistics: `saturated` units         saturation_bounds = (-1.0, 1.0)
    is_activation(m)              layer statistics: which modules are layers  (any of the three above)
    keeps_running_stats(m)        PreciseBN, transfer's frozen BN statistics  keeps_running_stats = True
    normalises_over_batch(m)      checks: batches of one example              normalises_over_batch = True
    removes_channel_mean(m)       networks: no bias before such a norm        removes_channel_mean = True

A declared class attribute wins over the tables below, so a user's own activation or norm is
classified right without editing trainlab (Maxout declares `init_nonlinearity = 'linear'`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

# The nonlinearity each activation stands for when gains are computed (torch.nn.init.calculate_gain
# names). ELU, CELU, GELU, SiLU, Mish and Softplus have no gain in torch.nn.init nor a derivation of
# He's standing: all are ReLU-shaped (identity for large inputs, ~0 for very negative ones), so they
# take ReLU's sqrt(2).
NONLINEARITY: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.LeakyReLU, "leaky_relu"),
    (nn.ReLU, "relu"),
    (nn.ReLU6, "relu"),
    (nn.Tanh, "tanh"),
    (nn.Sigmoid, "sigmoid"),
    (nn.SELU, "selu"),
    (nn.ELU, "relu"),
    (nn.CELU, "relu"),
    (nn.GELU, "relu"),
    (nn.SiLU, "relu"),
    (nn.Mish, "relu"),
    (nn.Softplus, "relu"),
)
# Activations whose units can die: flat (ReLU) or nearly flat (the smooth and leaky rectifiers)
# for negative inputs; their output is <= 0 exactly where their input is.
RECTIFIERS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)
# Bounded activations and the values their units saturate to (Glorot & Bengio 2010 watch them).
SATURATING: tuple[tuple[type[nn.Module], tuple[float, float]], ...] = (
    (nn.Tanh, (-1.0, 1.0)),
    (nn.Sigmoid, (0.0, 1.0)),
)
# timm's own activation layers (timm.layers.activations: what timm.layers.get_act_layer gives for
# gelu, sigmoid and tanh, as they take the `inplace` argument timm's blocks pass) and the torch
# class each computes the same function as; matched by name, so trainlab imports timm only for
# the models that use it.
TIMM_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "GELU": nn.GELU,
    "GELUTanh": nn.GELU,
    "QuickGELU": nn.GELU,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "Swish": nn.SiLU,
    "Mish": nn.Mish,
}
# Norms that subtract each channel's own mean: the BN family and instance norm. Layer and group
# norm subtract a mean over several channels and do not cancel a per-channel bias.
# trainlab's own norms declare it (BatchNormScratch: `removes_channel_mean = True`).
CHANNEL_MEAN_NORMS: tuple[type[nn.Module], ...] = (_BatchNorm, _InstanceNorm)


def _declared(module: nn.Module, name: str):
    return getattr(module, name, None)


def _kind(module: nn.Module) -> type[nn.Module]:
    """The class to look up in the tables: a timm activation's torch twin, else its own class."""
    kind = type(module)
    if kind.__module__ == "timm.layers.activations":
        return TIMM_ACTIVATIONS.get(kind.__name__, kind)
    return kind


def init_nonlinearity(module: nn.Module) -> tuple[str, float | None] | None:
    """(calculate_gain name, parameter) an activation stands for; None for other modules."""
    declared = _declared(module, "init_nonlinearity")
    if isinstance(declared, str):
        return declared, None
    for kind, name in NONLINEARITY:
        if issubclass(_kind(module), kind):
            return name, (float(module.negative_slope) if name == "leaky_relu" else None)
    return None


def is_rectifier(module: nn.Module) -> bool:
    """Units can die: the output is <= 0 exactly where the input is, and (nearly) flat there."""
    declared = _declared(module, "is_rectifier")
    return bool(declared) if declared is not None else issubclass(_kind(module), RECTIFIERS)


def saturation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """(low, high) a bounded activation saturates to (tanh: (-1, 1)); None for other modules."""
    declared = _declared(module, "saturation_bounds")
    if declared is not None:
        low, high = declared
        return float(low), float(high)
    for kind, bounds in SATURATING:
        if issubclass(_kind(module), kind):
            return bounds
    return None


def is_saturating(module: nn.Module) -> bool:
    return saturation_bounds(module) is not None


def is_activation(module: nn.Module) -> bool:
    """An activation: one with a gain for the init schemes (incl. Maxout), a rectifier or saturating."""
    return init_nonlinearity(module) is not None or is_rectifier(module) or is_saturating(module)


def keeps_running_stats(module: nn.Module) -> bool:
    """The module updates `running_mean` and `running_var` in train mode and normalises with them in
    eval mode (BatchNorm, trainlab's BatchNormScratch and GhostBatchNorm, instance norm with
    track_running_stats=True, a user's BN-like norm). Those are what PreciseBN recomputes and what a
    frozen stage must hold in eval mode. A layer built without running statistics
    (track_running_stats=False: the buffers are None) keeps none.

    Undeclared, any module holding both buffers counts; `keeps_running_stats = False` opts out.
    """
    declared = _declared(module, "keeps_running_stats")
    if declared is not None and not declared:
        return False
    return (
        getattr(module, "track_running_stats", True) is not False
        and isinstance(getattr(module, "running_mean", None), torch.Tensor)
        and isinstance(getattr(module, "running_var", None), torch.Tensor)
    )


def normalises_over_batch(module: nn.Module) -> bool:
    """In training the module normalises with statistics over the batch (BatchNorm and its kin, also
    without running statistics): a batch of one example with one value per channel has no variance
    (torch's BatchNorm refuses it: "Expected more than 1 value per channel when training")."""
    declared = _declared(module, "normalises_over_batch")
    if declared is not None:
        return bool(declared)
    return isinstance(module, _BatchNorm)


def removes_channel_mean(module: nn.Module) -> bool:
    """The module subtracts each channel's mean (BN family, instance norm): a bias added just before
    it is then cancelled, so the weight layer before it needs none."""
    declared = _declared(module, "removes_channel_mean")
    if declared is not None:
        return bool(declared)
    return isinstance(module, CHANNEL_MEAN_NORMS) or keeps_running_stats(module)
