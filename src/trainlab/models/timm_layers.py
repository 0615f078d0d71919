"""The norm and activation axes as a timm model's `norm_layer` and `act_layer`.

trainlab's own networks call the axes' factories for every layer; a timm model builds its layers
itself, from the `norm_layer` / `act_layer` arguments most of its architectures take. This module
translates an axis option into timm's layer, named as timm names it (`timm.layers.get_norm_layer`,
`get_act_layer`) with the option's knobs bound:

    norm=batchnorm     -> 'batchnorm2d' (momentum, eps, affine, track_running_stats)
    norm=groupnorm     -> 'groupnorm' (num_groups = norm.groups, eps, affine)
    norm=layernorm     -> 'groupnorm1' on feature maps: over (C, H, W), as trainlab's layernorm;
                          'layernorm' where the architecture normalises tokens (ViTs): over C
    norm=instancenorm  -> torch's InstanceNorm2d, on 4-D feature maps (timm has no name for it)
    norm=none          -> nn.Identity
    activation=relu, leaky_relu, elu, gelu, silu, sigmoid, tanh -> timm's layer of that name
    norm=native, activation=native -> nothing passed: the architecture's own layers

Whether an architecture takes a layer is found by building it and running one forward pass of a
zero batch at the data's size (timm raises TypeError for an argument an architecture lacks,
AssertionError for a norm its blocks cannot use, and a norm of the wrong layout fails on the first
forward), so a choice that cannot work is a ConfigError before training, with the options that do.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from timm.layers import get_act_layer, get_norm_layer
from torch import nn

from trainlab.activations.native import native as native_activation
from trainlab.norm import factories
from trainlab.utils.config import ConfigError

# trainlab's activation options (their torch class) and timm's names for them
ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
}
# trainlab's norm options that timm models can take (the factories in trainlab.norm.factories)
NORMS = ("batchnorm", "groupnorm", "layernorm", "instancenorm", "none")


def norm_candidates(norm: functools.partial) -> list[Any]:
    """timm `norm_layer`s for a norm option, in the order to try them; [] for norm=native."""
    factory = norm.func
    options = {**_defaults(factory), **norm.keywords}  # the option's knobs as its YAML would set them
    if factory is factories.native:
        return []
    if factory is factories.batchnorm:
        return [functools.partial(get_norm_layer("batchnorm2d"), **options)]
    if factory is factories.groupnorm:
        groups = options.pop("groups", 32)
        return [functools.partial(get_norm_layer("groupnorm"), num_groups=groups, **options)]
    if factory is factories.layernorm:
        return [  # feature maps first: what norm=layernorm is on trainlab's convolutional models
            functools.partial(get_norm_layer("groupnorm1"), **options),  # over (C, H, W)
            functools.partial(get_norm_layer("layernorm"), **options),  # over each token's C
        ]
    if factory is factories.instancenorm:
        return [functools.partial(BatchedInstanceNorm2d, **options)]
    if factory is factories.none:
        return [nn.Identity]
    name = getattr(factory, "__name__", repr(factory))
    raise ConfigError(
        f"norm={name} ({factory.__module__}.{name}) is a layer trainlab builds itself; a timm model "
        f"(model=timm) builds its own layers and takes norm in {['native', *NORMS]} "
        "(native: the architecture's own)."
    )


def _defaults(factory: Callable) -> dict[str, Any]:
    """A norm factory's knobs with their defaults (`num_features` and `spatial` are trainlab's calls)."""
    parameters = inspect.signature(factory).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty and p.name not in ("num_features", "spatial")
    }


class BatchedInstanceNorm2d(nn.InstanceNorm2d):
    """torch's InstanceNorm2d for batches of feature maps only: torch's reads a 3-D input as one
    unbatched image, so on a ViT's (N, tokens, C) it would normalise the wrong axes, silently
    where affine=False."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W), got {input.dim()}D input")


def act_layer(activation: functools.partial) -> Any | None:
    """timm's `act_layer` for an activation option; None for activation=native."""
    layer, options = activation.func, dict(activation.keywords)
    if layer is native_activation:
        return None
    if layer not in ACTIVATIONS:
        name = f"{layer.__module__}.{getattr(layer, '__name__', repr(layer))}"
        raise ConfigError(
            f"activation {name} cannot be a timm model's act_layer (activation=maxout widens the layer "
            "before it, which a timm architecture does not do); a timm model (model=timm) takes activation in "
            f"{['native', *ACTIVATIONS.values()]} (native: the architecture's own)."
        )
    name = ACTIVATIONS[layer]
    if name == "gelu" and options.pop("approximate", "none") == "tanh":
        name = "gelu_tanh"
    timm_layer = get_act_layer(name)  # timm's own classes take the `inplace` its blocks pass
    return functools.partial(timm_layer, **options) if options else timm_layer


def requested_layers(
    norm: functools.partial, activation: functools.partial, position: str
) -> list[dict[str, Any]]:
    """The timm keyword sets to try, in order (`norm_layer`, `act_layer`); [] for the
    architecture's own layers."""
    norms = norm_candidates(norm)
    if norms and position != "pre_act":
        raise ConfigError(
            f"norm.position={position!r}: a timm model places its norm layers itself (model=timm); "
            "use norm.position=pre_act."
        )
    act = act_layer(activation)
    acts = {"act_layer": act} if act else {}
    if not norms:
        return [acts] if acts else []
    return [{"norm_layer": layer, **acts} for layer in norms]


def build_with_layers(
    create: Callable[..., nn.Module],
    layer_sets: list[dict[str, Any]],
    input_shape: tuple[int, int, int],
    model: str,
    chosen: str,
) -> nn.Module:
    """`create(**layers)` for the first layer set the architecture takes and runs with.

    `model` (`model=timm (resnet18)`) and `chosen` (the options asked for) name them in the
    message when none works."""
    errors = []
    for layers in layer_sets:
        try:
            return runs(create(**layers), input_shape)
        except ConfigError:
            raise
        except Exception as error:  # timm fails by architecture: TypeError, AssertionError, shapes
            errors.append(error)
    try:  # the architecture itself may not run on the data's size: then no option is to blame
        runs(create(), input_shape)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            f"{model} does not run on the data's input {tuple(input_shape)} even with its own layers "
            f"({_first_line(error)}): choose another model.name, or larger images."
        ) from error
    takes_norm, takes_act = working_options(create, input_shape)
    raise ConfigError(
        f"{model} with {chosen}: the architecture cannot take it ({_first_line(errors[0])}). "
        f"This model takes norm in {takes_norm} and activation in {takes_act} (native: its own layers)."
    ) from errors[0]


def runs(net: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    """`net` after one forward pass of a zero batch in eval mode (no statistic changes)."""
    training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(2, *input_shape))
    return net.train(training)


def working_options(
    create: Callable[..., nn.Module], input_shape: tuple[int, int, int]
) -> tuple[list[str], list[str]]:
    """The norm and activation options this architecture builds and runs with (default knobs),
    each with the other axis native."""

    def works(layers: dict[str, Any]) -> bool:
        try:
            runs(create(**layers), input_shape)
        except Exception:  # any failure means the option does not work here
            return False
        return True

    norms = [
        option
        for option in NORMS
        if any(
            works({"norm_layer": layer})
            for layer in norm_candidates(functools.partial(getattr(factories, option)))
        )
    ]
    acts = [name for name in ACTIVATIONS.values() if works({"act_layer": get_act_layer(name)})]
    return ["native", *norms], ["native", *acts]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


NATIVE = {"norm": "trainlab.norm.native", "activation": "trainlab.activations.native"}


def swapped_axes(network: dict[str, Any]) -> str:
    """`norm=trainlab.norm.groupnorm, activation=torch.nn.SiLU`: the axes that replace a timm
    model's own layers in a network config (build_network's arguments); '' when none does."""
    if not (network.get("model") or {}).get("use_axes"):
        return ""
    swapped = [
        f"{axis}={(network.get(axis) or {}).get('_target_')}"
        for axis, native in NATIVE.items()
        if (network.get(axis) or {}).get("_target_") not in (None, native)
    ]
    return ", ".join(swapped)
