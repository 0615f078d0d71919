"""What a norm factory or an activation offers a timm model, declared next to it.

A timm architecture builds its own layers from two arguments of `timm.create_model`: `norm_layer`,
called `norm_layer(num_features)` (a ResNet's BatchNorm on feature maps (N, C, H, W), a ViT's
LayerNorm on tokens (N, L, C), over C), and `act_layer`, called `act_layer()` or
`act_layer(inplace=True)`. An option of the `norm` or `activation` axis says how it fills them
with a decorator on its factory (or class); trainlab.models.timm_layers reads it:

    @offers_timm(TimmName("batchnorm2d"))                      timm's layer of that name
                                                               (timm.layers.get_norm_layer), the
                                                               option's knobs bound
    @offers_timm(TimmName("groupnorm", {"groups": "num_groups"}))   a knob under timm's name
    @offers_timm(TimmName("groupnorm1"), TimmName("layernorm"))     the first the architecture
                                                               builds and runs with
    @offers_timm(Itself(spatial=False, inputs="tokens"))       the factory itself,
                                                               factory(num_features, spatial, **knobs),
                                                               on the inputs named
    @offers_timm()                                             nothing passed: the architecture's
                                                               own layers (norm=native)
    @refuses_timm("why")                                       a ConfigError that says why

Undeclared, a norm factory is offered as itself: `factory(num_features, True, **knobs)` where
the layer takes feature maps, `factory(num_features, False, **knobs)` where it takes vectors
(N, C). A ViT's tokens (N, L, C) take a declaration, `Itself(spatial=False, inputs="tokens")`:
only the factory knows whether its layer for vectors normalises the last axis (LayerNorm does,
BatchNorm1d reads axis 1). Undeclared, an activation class is itself: `layer(**knobs)`, with
timm's `inplace` where the class takes one. So a study's own norm or activation works with
model=timm with no edit of trainlab and no declaration. A declaration names timm's own layer where
one computes the same (architectures that fuse norm and activation, as EfficientNet's
BatchNormAct2d, build them from timm's norm classes only), opens tokens, or refuses with a reason.

The declaration is data: this module imports neither timm nor the factories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

# The inputs a layer built by the factory itself is meant for (their dimensions, in words); checked
# on the forward pass of a zero batch that every timm model with swapped layers makes before training.
Inputs = Literal["maps", "vectors", "tokens", "any"]
INPUTS: dict[str, tuple[tuple[int, ...], str]] = {
    "maps": ((4,), "feature maps (N, C, H, W)"),
    "vectors": ((2,), "vectors (N, C)"),
    "tokens": ((3, 2), "tokens (N, L, C) or vectors (N, C), over C, the last axis"),
    "any": ((), "any input"),  # an identity, a layer that reads no axis
}


@dataclass(frozen=True)
class TimmName:
    """timm's layer of this name (`timm.layers.get_norm_layer` / `get_act_layer`), the option's knobs
    bound, those in `renamed` under timm's keyword."""

    name: str
    renamed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Itself:
    """The factory itself: `factory(num_features, spatial, **knobs)` for a norm (`spatial`: whether
    it builds for feature maps), `layer(**knobs)` for an activation; `inputs`: what it may be fed."""

    spatial: bool = True
    inputs: Inputs = "maps"


@dataclass(frozen=True)
class Refused:
    """Never a timm layer, and why (Maxout widens the layer before it, which timm's blocks do not)."""

    reason: str


NORM_FALLBACK = (Itself(spatial=True, inputs="maps"), Itself(spatial=False, inputs="vectors"))
ACTIVATION_FALLBACK = (Itself(inputs="any"),)

Offer = tuple[TimmName | Itself, ...] | Refused
F = TypeVar("F", bound=Callable[..., Any])


def offers_timm(*ways: TimmName | Itself) -> Callable[[F], F]:
    """Declare how a factory (or activation class) becomes timm's layer, in the order to try them;
    no ways: the architecture's own layers. The factory is returned unchanged."""

    def declare(factory: F) -> F:
        factory.timm_offer = tuple(ways)
        return factory

    return declare


def refuses_timm(reason: str) -> Callable[[F], F]:
    """Declare that a factory (or activation class) cannot be a timm model's layer, and why."""

    def declare(factory: F) -> F:
        factory.timm_offer = Refused(reason)
        return factory

    return declare


def norm_offer(factory: Callable) -> Offer:
    """What a norm factory offers timm's `norm_layer`: its declaration, else itself."""
    return getattr(factory, "timm_offer", NORM_FALLBACK)


def activation_offer(layer: Callable) -> Offer:
    """What an activation class offers timm's `act_layer`: its declaration, else itself."""
    return getattr(layer, "timm_offer", ACTIVATION_FALLBACK)
