"""Any timm model as the network of `model=timm model.name=<timm name>`.

The network is timm's own model: `timm.create_model(name, num_classes=<the data's classes>,
in_chans=<the data's channels>)`, so its classifier is a new head for the data's classes and its
first convolution takes grey images where the data are grey. Its state dict keys are timm's, so a
trainlab checkpoint's `net.*` tensors load straight into timm.

The norm and activation axes become timm's `norm_layer` / `act_layer` where the architecture takes
them (trainlab.models.timm_layers); `norm=native activation=native`, model=timm's defaults, keep
the architecture's own layers.

Weights are never loaded here: this function only builds the architecture, also when a
checkpoint is reloaded (eval, resume), so a reload never downloads anything. Pretrained weights
(`transfer.pretrained`, `transfer.pretrained_file`, `transfer.pretrained_ckpt`) are loaded once,
after the init scheme, by `trainlab.transfer.pretrained.load_pretrained`.

A timm model's class is timm's, so it cannot implement trainlab.transfer.TransferNetwork itself:
`TimmTransfer` below is its adapter, registered with trainlab.transfer for every timm model.

Stages (what `transfer.freeze_depth=k` counts) come from timm's coarse `group_matcher`, the
grouping timm itself uses for layer-wise learning-rate decay: the stem first, then one stage per
block group (resnet: layer1..layer4; vit: each transformer block; convnext: each stage). Layers
after the last block (a final norm, `conv_head`) belong to the last stage; the classifier
(`get_classifier()`) is the head and is never frozen.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

import timm
from timm.models._manipulate import group_with_matcher  # what timm.models.group_parameters uses
from torch import nn

from trainlab.layers.stages import Split, Stage, describe_keys
from trainlab.layers.transferable import Layer, register_adapter
from trainlab.models import timm_layers
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)


def timm_network(
    input_shape: tuple[int, int, int],
    num_classes: int,
    norm: Callable | None = None,
    activation: Callable | None = None,
    position: str = "pre_act",
    name: str = "resnet18",
    use_axes: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """`timm.create_model(name, num_classes=..., in_chans=..., **kwargs)`, without weights.

    Args:
        input_shape: (channels, height, width) of the data; channels become `in_chans`.
        num_classes: classes of the data: timm builds its classifier with this many outputs.
        norm, activation, position: the study axes (partials of the `norm` and `activation`
            options). With `use_axes`, they become timm's `norm_layer` / `act_layer`
            (trainlab.models.timm_layers); `native` keeps the architecture's own.
        name: any name `timm.list_models()` knows, with or without a pretrained tag
            (`resnet18`, `resnet18.a1_in1k`, `test_resnet`, ...).
        use_axes: whether the norm and activation axes apply (conf/model/timm.yaml sets it).
            False, the default, is what checkpoints written before timm models took the axes
            hold: they were built with the architecture's own layers and are rebuilt so.
        **kwargs: passed to timm (`drop_rate`, `drop_path_rate`, `patch_size`, ...); models
            with a fixed input size (ViTs) get `img_size` = the data's size unless given.
    """
    if not use_axes or norm is None or activation is None:
        log.info(f"model=timm ({name}): the architecture's own norm and activation layers.")
        return create(name, input_shape, num_classes, **kwargs)
    layer_sets = timm_layers.requested_layers(norm, activation, position)
    if not layer_sets:
        return create(name, input_shape, num_classes, **kwargs)
    check_name(name)  # a wrong name is that error, not one about layers
    return timm_layers.build_with_layers(
        lambda **layers: create(name, input_shape, num_classes, **kwargs, **layers),
        layer_sets,
        tuple(input_shape),
        model=f"model=timm ({name})",
        chosen=describe_axes(norm, activation),
    )


def describe_axes(norm: Callable, activation: Callable) -> str:
    """`norm=groupnorm (norm.groups=32, ...), activation=silu`: the options a timm model was asked for."""
    parts = []
    for axis, chosen in (("norm", norm), ("activation", activation)):
        func = getattr(chosen, "func", chosen)
        option = timm_layers.option_name(axis, func)
        knobs = ", ".join(f"{axis}.{k}={v}" for k, v in getattr(chosen, "keywords", {}).items())
        parts.append(f"{axis}={option}" + (f" ({knobs})" if knobs else ""))
    return ", ".join(parts)


def check_name(name: str) -> None:
    """A ConfigError with close names when `name` is not a timm model."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=8, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ConfigError(f"model.name={name!r} is not a timm model (see timm.list_models()).{hint}")


def create(name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: Any) -> nn.Module:
    """`timm.create_model` for the data's shape and classes; no weights unless kwargs ask for
    them (`pretrained=True`, `pretrained_cfg_overlay=dict(file=...)`: trainlab.transfer.pretrained)."""
    check_name(name)
    channels, height, width = input_shape
    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:  # a wrong pretrained tag
        raise ConfigError(f"model.name={name!r}: {error}") from error
    if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs.setdefault("img_size", (height, width))  # ViTs size their position embedding to it
    kwargs.setdefault("pretrained", False)
    return timm.create_model(name, num_classes=num_classes, in_chans=channels, **kwargs)


def classifier_name(net: nn.Module) -> str:
    """The module path of a timm model's classifier (`fc`, `head`, `head.fc`, `classifier`)."""
    classifier = net.get_classifier()
    for name, module in net.named_modules():
        if module is classifier and name:
            return name
    raise ConfigError(
        f"{type(net).__name__}.get_classifier() returned no sub-module with weights: trainlab needs "
        "a classifier head to train on the data's classes."
    )


def timm_stage_keys(net: nn.Module) -> tuple[list[list[str]], list[str]]:
    """(state-dict keys of each backbone stage in forward order, keys of the classifier head).

    Parameters and buffers (BatchNorm statistics) are grouped by timm's coarse group matcher.
    A model without one is a single stage.
    """
    head_prefix = classifier_name(net) + "."
    keys = list(net.state_dict().keys())
    head = [k for k in keys if k.startswith(head_prefix)]
    try:
        matcher = net.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        log.warning(f"{type(net).__name__} has no timm group_matcher: its backbone is one stage.")
        return [[k for k in keys if not k.startswith(head_prefix)]], head
    groups = group_with_matcher(((k, None) for k in keys), matcher)
    stages: list[list[str]] = []
    for _, group_keys in sorted(groups.items()):
        body = [k for k in group_keys if not k.startswith(head_prefix)]
        if len(body) == len(group_keys) or not stages:
            stages.append(body)
        else:  # the head's group: what is not the classifier (a final norm) closes the last stage
            stages[-1].extend(body)
    return [s for s in stages if s], head


def is_timm_model(net: nn.Module) -> bool:
    """A model timm built (it has timm's classifier accessor and pretrained config)."""
    return callable(getattr(net, "get_classifier", None)) and hasattr(net, "pretrained_cfg")


class TimmTransfer:
    """trainlab.transfer.TransferNetwork for a timm model: stages from timm_stage_keys, the layers
    of layer-wise LR decay from timm, and timm's published weights (hub or a local file) as a
    source of pretrained weights."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def transfer_split(self) -> Split:
        stage_keys, head_keys = timm_stage_keys(self.net)
        stages = [Stage(describe_keys(keys, self.net), tuple(keys)) for keys in stage_keys]
        return Split(stages, Stage("head", tuple(head_keys)))

    def decay_layers(self, layer_decay: float) -> list[Layer]:
        """The layers of `transfer.layer_decay` as timm's own `param_groups_layer_decay` makes them
        (its fine group_matcher: resnet's stem and each residual block, vit's embeddings and each
        block; the classifier on top). Only its rate scales are used: weight_decay=0 and no 1-D
        exclusion, so that it returns one group per layer and the optimizer config keeps deciding
        weight decay. timm leaves out parameters without requires_grad: call it before freezing."""
        from timm.optim import param_groups_layer_decay  # timm.optim imports every optimizer: only here

        groups = param_groups_layer_decay(
            self.net, weight_decay=0.0, weight_decay_exclude_1d=False, layer_decay=layer_decay
        )
        names = {id(p): n for n, p in self.net.named_parameters()}
        layers = []
        for group in groups:
            params = tuple(names[id(p)] for p in group["params"])
            layers.append(Layer(describe_keys(list(params), self.net), params, float(group["lr_scale"])))
        return layers

    def pretrained_state(self, network: dict[str, Any], file: str | None):
        """(tensors, source, notes) of timm's weights for this model, as timm loads them
        (`transfer.pretrained` / `transfer.pretrained_file`); `network`: its build arguments."""
        from trainlab.models.timm_weights import timm_state

        state, source, notes = timm_state(
            network["model"], network["input_shape"], network["num_classes"], file
        )
        swapped = timm_layers.swapped_axes(network)
        if swapped:  # allowed: fine-tuning another norm or activation from these weights is a study
            note = (
                f"{swapped} replace(s) the layers these weights were trained with: tensors of the same "
                "name and shape load (a norm's scale and shift: BatchNorm's gamma and beta become "
                "GroupNorm's), the old norm's running statistics have no place (listed as unused)"
            )
            log.warning(f"Pretrained weights from {source}: {note}.")
            notes.append(note)
        return state, source, notes


register_adapter(is_timm_model, TimmTransfer)
