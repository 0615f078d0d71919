"""A norm factory or activation class from anywhere is a timm model's norm_layer / act_layer: as
itself when it declares nothing, as it declares with @offers_timm / @refuses_timm
(trainlab.layers.timm_offers). timm's tiny test models need no download."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from trainlab.activations import native
from trainlab.layers.timm_offers import Itself, offers_timm, refuses_timm
from trainlab.models.timm_backbone import timm_network
from trainlab.utils.config import ConfigError

SHAPE = (1, 28, 28)


@offers_timm(Itself(spatial=False, inputs="tokens"))
def rms(num_features: int, spatial: bool, eps: float = 1e-6) -> nn.Module:
    """RMSNorm over the last axis: fits vectors and a ViT's tokens, not feature maps."""
    if spatial:
        raise ConfigError("norm=rms normalises vectors: use it with model=mlp.")
    return nn.RMSNorm(num_features, eps=eps)


def batch_only(num_features: int, spatial: bool, momentum: float = 0.1) -> nn.Module:
    """A norm declaring nothing: offered as itself on feature maps and vectors."""
    return (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(num_features, momentum=momentum)


class Cube(nn.Module):
    """An activation declaring nothing and taking no `inplace`."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x**3


@refuses_timm("it needs the layer before it twice as wide")
class Halving(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : x.shape[1] // 2]


def build(name: str, norm, activation, **kwargs) -> nn.Module:
    return timm_network(SHAPE, 10, norm=norm, activation=activation, name=name, use_axes=True, **kwargs)


NATIVE_ACT = functools.partial(native)  # activation=native: the architecture's own


def test_an_undeclared_norm_and_activation_are_themselves_with_their_knobs():
    net = build(
        "test_resnet", functools.partial(batch_only, momentum=0.3), functools.partial(Cube, scale=0.5)
    )
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    cubes = [m for m in net.modules() if isinstance(m, Cube)]
    assert norms and all(m.momentum == 0.3 for m in norms)  # timm's default would be 0.1
    assert (
        cubes
        and all(m.scale == 0.5 for m in cubes)
        and not any(isinstance(m, nn.ReLU) for m in net.modules())
    )
    assert not any(m._forward_pre_hooks for m in net.modules())  # the layout check ran once and left


def test_a_norm_declared_for_tokens_builds_a_vit_and_is_refused_on_feature_maps():
    vit = build("test_vit", functools.partial(rms, eps=1e-3), NATIVE_ACT, patch_size=4)
    layers = [m for m in vit.modules() if isinstance(m, nn.RMSNorm)]
    assert layers and all(m.eps == 1e-3 for m in layers)
    assert not any(isinstance(m, nn.LayerNorm) for m in vit.modules())
    with pytest.raises(
        ConfigError, match=r"rms\(spatial=False\) is offered to timm for tokens .* 4-D inputs"
    ):
        build("test_resnet", functools.partial(rms), NATIVE_ACT)


def test_a_factorys_own_error_is_the_message():
    """A ConfigError of the factory (a bad knob, a layout it refuses) says more than the list."""

    def checked(num_features: int, spatial: bool, width: int = 1) -> nn.Module:
        if width < 2:
            raise ConfigError(f"norm.width={width} must be >= 2.")
        return nn.Identity()

    with pytest.raises(ConfigError, match=r"^norm.width=1 must be >= 2.$"):
        build("test_resnet", functools.partial(checked), NATIVE_ACT)
    assert isinstance(build("test_resnet", functools.partial(checked, width=2), NATIVE_ACT), nn.Module)


def test_an_undeclared_norm_on_a_vits_tokens_names_the_layouts():
    """BatchNorm1d(C) on (N, L, C) would read L as channels: refused before training."""
    with pytest.raises(ConfigError) as error:
        build("test_vit", functools.partial(batch_only), NATIVE_ACT, patch_size=4)
    message = str(error.value)
    assert "model=timm (test_vit) with norm=test_timm_offers.batch_only" in message
    assert "is offered to timm for feature maps (N, C, H, W)" in message and "3-D inputs" in message
    assert "takes norm in ['native', 'layernorm', 'none']" in message


def test_a_norm_where_timm_fuses_norm_and_activation_names_the_problem():
    """EfficientNet builds BatchNormAct2d-like layers from timm's norm classes only."""
    with pytest.raises(ConfigError, match=r"batch_only takes no \['inplace'\].*norm\+activation layer"):
        build("test_efficientnet", functools.partial(batch_only), NATIVE_ACT)


def test_a_refused_activation_says_why_and_what_works():
    with pytest.raises(ConfigError) as error:
        build("test_resnet", functools.partial(batch_only), functools.partial(Halving))
    message = str(error.value)
    assert "activation test_timm_offers.Halving cannot be a timm model's activation_layer" in message
    assert "(it needs the layer before it twice as wide)" in message
    assert (
        "takes activation in ['native', 'elu', 'gelu', 'leaky_relu', 'relu', 'sigmoid', 'silu', 'tanh']"
        in message
    )
