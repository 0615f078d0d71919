"""The norm and activation axes as a timm model's `norm_layer` and `act_layer`.

trainlab's own networks call the axes' factories for every layer; a timm model builds its layers
itself, from the `norm_layer` / `act_layer` arguments most of its architectures take. Each option
declares next to its factory what it offers timm (trainlab.layers.timm_offers): timm's layer of a
name with the option's knobs bound, or the factory itself, which is what an undeclared factory (a
study's own) offers. trainlab's own declare:

    norm=batchnorm     -> timm's 'batchnorm2d' (momentum, eps, affine, track_running_stats)
    norm=groupnorm     -> timm's 'groupnorm' (num_groups = norm.groups, eps, affine)
    norm=layernorm     -> timm's 'groupnorm1' on feature maps: over (C, H, W), as trainlab's
                          layernorm; timm's 'layernorm' where the architecture normalises tokens
                          (ViTs): over C
    norm=instancenorm  -> itself, on 4-D feature maps only (torch's InstanceNorm2d reads a ViT's
                          (N, L, C) as one unbatched image)
    norm=none          -> itself (an identity), anywhere
    activation=maxout  -> refused: it widens the layer before it, which timm's blocks do not do
    norm=native, activation=native -> nothing passed: the architecture's own layers
    undeclared norm    -> itself: factory(num_features, True, **knobs) on feature maps,
                          factory(num_features, False, **knobs) on vectors (N, C)
                          (norm=batchnorm_scratch, norm=ghost_batchnorm, a study's own)
    undeclared activation -> itself: layer(**knobs), with timm's `inplace` where the class takes it
                          (torch's ReLU, GELU, SiLU, ... and a study's own)

Whether an architecture takes a layer is found by building it and running one forward pass of a
zero batch at the data's size (timm raises TypeError for an argument an architecture lacks,
AssertionError for a norm its blocks cannot use, a norm of the wrong layout fails on the first
forward, and a layer built by a factory checks there that its input is of a layout it was offered
for), so a choice that cannot work is a ConfigError before training, with the options that do.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.layers import get_act_layer, get_norm_layer
from torch import nn

from trainlab import CONFIG_DIR
from trainlab.layers.timm_offers import (
    INPUTS,
    Itself,
    Refused,
    TimmName,
    activation_offer,
    norm_offer,
)
from trainlab.utils.config import ConfigError


def norm_candidates(norm: functools.partial) -> list[Any]:
    """timm `norm_layer`s for a norm option, in the order to try them; [] for norm=native."""
    factory, knobs = norm.func, dict(norm.keywords)
    offer = norm_offer(factory)
    if isinstance(offer, Refused):
        raise refused("norm", factory, offer)
    return [norm_layer(way, factory, knobs) for way in offer]


def act_candidates(activation: functools.partial) -> list[Any]:
    """timm `act_layer`s for an activation option, in the order to try them; [] for activation=native."""
    layer, knobs = activation.func, dict(activation.keywords)
    offer = activation_offer(layer)
    if isinstance(offer, Refused):
        raise refused("activation", layer, offer)
    return [act_layer(way, layer, knobs) for way in offer]


def refused(axis: str, factory: Callable, offer: Refused) -> ConfigError:
    return ConfigError(
        f"{axis} {_path(factory)} cannot be a timm model's {axis}_layer ({offer.reason}); a timm model "
        f"(model=timm) takes {axis} in {['native', *offered(axis)]} (native: the architecture's own)."
    )


def norm_layer(way: TimmName | Itself, factory: Callable, knobs: dict[str, Any]) -> Any:
    """One `norm_layer` for timm: a partial with keywords only, as timm's get_norm_layer rebinds
    a partial's keywords and drops its positional arguments."""
    if isinstance(way, TimmName):
        options = {**_defaults(factory), **knobs}  # the option's knobs as its YAML would set them
        options = {way.renamed.get(name, name): value for name, value in options.items()}
        return functools.partial(get_norm_layer(way.name), **options)
    return functools.partial(built_norm, factory=factory, spatial=way.spatial, inputs=way.inputs, knobs=knobs)


def built_norm(
    num_features: int,
    *,
    factory: Callable,
    spatial: bool,
    inputs: str,
    knobs: dict[str, Any],
    device: Any = None,
    dtype: Any = None,
    **asked: Any,
) -> nn.Module:
    """`factory(num_features, spatial, **knobs)` as timm calls a norm_layer: `norm_layer(C)` (with
    the `device` and `dtype` of its `**dd`). Keywords the architecture asks for win over the
    option's where the factory takes them; a keyword it does not take is a TypeError, e.g. the
    `apply_act` and `inplace` of timm's norm+activation layers (EfficientNet's BatchNormAct2d),
    which only timm's own norm classes give."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(name for name in asked if name not in parameters and not takes_any)
    if unknown:
        raise TypeError(
            f"{_path(factory)} takes no {unknown}: this architecture asks its norm_layer for them "
            "(a norm+activation layer), which only timm's own norm classes are"
        )
    layer = factory(num_features, spatial, **{**knobs, **asked})
    if device is not None or dtype is not None:
        layer = layer.to(device=device, dtype=dtype)
    check_first_input(layer, inputs, f"{_path(factory)}(spatial={spatial})")
    return layer


def check_first_input(layer: nn.Module, inputs: str, built_by: str) -> None:
    """Check, on the layer's first forward (the zero batch every swapped timm model runs before
    training), that it is fed the layout it was offered for, then remove the check: a layer built
    for vectors (N, C) may run on a ViT's tokens (N, L, C) without an error and normalise the
    wrong axis."""
    dims = INPUTS[inputs][0]
    if not dims:
        return

    def check(module: nn.Module, args: tuple) -> None:
        handle.remove()
        shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
        if shape is not None and len(shape) not in dims:
            raise ValueError(
                f"{built_by} is offered to timm for {INPUTS[inputs][1]}, but this architecture feeds its "
                f"norm layers {len(shape)}-D inputs {shape}; a factory that fits them says so with "
                "@offers_timm(Itself(...)) (trainlab.layers.timm_offers)"
            )

    handle = layer.register_forward_pre_hook(check)


def act_layer(way: TimmName | Itself, layer: Callable, knobs: dict[str, Any]) -> Any:
    """One `act_layer` for timm: timm's layer of a name with the knobs, or the class itself."""
    if isinstance(way, TimmName):
        options = {way.renamed.get(name, name): value for name, value in knobs.items()}
        timm_layer = get_act_layer(way.name)
        return functools.partial(timm_layer, **options) if options else timm_layer
    return functools.partial(built_activation, layer=layer, knobs=knobs)


def built_activation(
    *,
    layer: Callable,
    knobs: dict[str, Any],
    inplace: bool | None = None,
    device: Any = None,
    dtype: Any = None,
    **asked: Any,
) -> nn.Module:
    """`layer(**knobs)` as timm calls an act_layer: `act_layer()` or `act_layer(inplace=True)`;
    `inplace` reaches only a class that takes it (torch's ReLU does, GELU does not)."""
    if inplace is not None and "inplace" in inspect.signature(layer).parameters:
        asked["inplace"] = inplace
    module = layer(**{**knobs, **asked})
    return module.to(device=device, dtype=dtype) if device is not None or dtype is not None else module


def _defaults(factory: Callable) -> dict[str, Any]:
    """A norm factory's knobs with their defaults (`num_features` and `spatial` are trainlab's calls)."""
    parameters = inspect.signature(factory).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty and p.name not in ("num_features", "spatial")
    }


def _path(factory: Callable) -> str:
    return f"{factory.__module__}.{getattr(factory, '__qualname__', repr(factory))}"


@functools.cache
def trainlab_options(axis: str) -> tuple[tuple[str, functools.partial], ...]:
    """trainlab's options of an axis, `conf/<axis>/<name>.yaml` by name, each as the partial it
    instantiates (its YAML's knobs): the one list of them."""
    options = []
    for path in sorted(Path(CONFIG_DIR, axis).glob("*.yaml")):
        config = OmegaConf.to_container(OmegaConf.load(path))
        config.pop("position", None)  # the networks' placement, not a knob of the factory
        options.append((path.stem, instantiate(config)))
    return tuple(options)


def offered(axis: str) -> list[str]:
    """trainlab's options of an axis that offer timm a layer (neither refused nor native)."""
    offer = norm_offer if axis == "norm" else activation_offer
    return [name for name, option in trainlab_options(axis) if _offers_a_layer(offer(option.func))]


def _offers_a_layer(offer: Any) -> bool:
    return not isinstance(offer, Refused) and len(offer) > 0


def option_name(axis: str, factory: Callable) -> str:
    """The option's name (`groupnorm`, `silu`) for one of trainlab's, else the factory's import path."""
    for name, option in trainlab_options(axis):
        if option.func is factory:
            return name
    return _path(factory)


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
    acts = act_candidates(activation)
    norm_sets = [{"norm_layer": layer} for layer in norms] or [{}]
    act_sets = [{"act_layer": layer} for layer in acts] or [{}]
    layer_sets = [{**n, **a} for n, a in itertools.product(norm_sets, act_sets)]
    return [layers for layers in layer_sets if layers]


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
        except Exception as error:  # timm fails by architecture: TypeError, AssertionError, shapes;
            errors.append(error)  # a factory's ConfigError may be about this layout only: try the next
    try:  # the architecture itself may not run on the data's size: then no option is to blame
        runs(create(), input_shape)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            f"{model} does not run on the data's input {tuple(input_shape)} even with its own layers "
            f"({_first_line(error)}): choose another model.name, or larger images."
        ) from error
    config_errors = [error for error in errors if isinstance(error, ConfigError)]
    if config_errors:  # the option's own message (a bad knob, a layout it refuses) says most
        raise config_errors[0]
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

    def taken(axis: str, keyword: str, candidates: Callable[[functools.partial], list[Any]]) -> list[str]:
        options = dict(trainlab_options(axis))
        return [
            name
            for name in offered(axis)
            if any(works({keyword: layer}) for layer in candidates(options[name]))
        ]

    return (
        ["native", *taken("norm", "norm_layer", norm_candidates)],
        ["native", *taken("activation", "act_layer", act_candidates)],
    )


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
