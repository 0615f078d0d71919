"""Factories for the `norm` config group: `factory(num_features, spatial, **options) -> nn.Module`.

`spatial` is True for (N, C, H, W) feature maps and False for (N, C) vectors. Each factory is
one `conf/norm/<name>.yaml`; the BatchNorm family shares the options momentum, eps, affine and
track_running_stats.

`@offers_timm(...)` above a factory says what it gives a timm model's `norm_layer` (model=timm):
timm's own layer of the same maths where there is one, else the factory itself
(trainlab.layers.timm_offers). An undeclared factory, trainlab's or a study's own, is offered as
itself on feature maps and vectors.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from trainlab.layers.timm_offers import Itself, TimmName, offers_timm
from trainlab.norm.batchnorm_scratch import BatchNormScratch
from trainlab.norm.ghost_batchnorm import GhostBatchNorm
from trainlab.utils.config import ConfigError


class NormFactory(Protocol):
    def __call__(self, num_features: int, spatial: bool) -> nn.Module: ...


@offers_timm(Itself(spatial=True, inputs="any"))  # an identity fits any layout
def none(num_features: int, spatial: bool) -> nn.Module:
    """No normalisation (an identity, so networks keep one layout for every norm)."""
    return nn.Identity()


@offers_timm(TimmName("batchnorm2d"))
def batchnorm(
    num_features: int,
    spatial: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """torch's BatchNorm1d for vectors, BatchNorm2d for feature maps (Ioffe & Szegedy 2015)."""
    layer = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    return layer(
        num_features,
        eps=eps,
        momentum=momentum,
        affine=affine,
        track_running_stats=track_running_stats,
    )


def batchnorm_scratch(
    num_features: int,
    spatial: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """BatchNorm written from Ioffe & Szegedy's algorithm (trainlab.norm.batchnorm_scratch);
    the same maths as `batchnorm`, readable and hackable."""
    return BatchNormScratch(
        num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )


def ghost_batchnorm(
    num_features: int,
    spatial: bool,
    virtual_batch_size: int = 16,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """BatchNorm with statistics over virtual batches of `virtual_batch_size` examples
    (Hoffer et al. 2017; trainlab.norm.ghost_batchnorm). The size must divide every training batch."""
    return GhostBatchNorm(
        num_features,
        virtual_batch_size,
        eps=eps,
        momentum=momentum,
        affine=affine,
        track_running_stats=track_running_stats,
    )


@offers_timm(  # feature maps first: what norm=layernorm is on trainlab's convolutional models
    TimmName("groupnorm1"),  # over (C, H, W), with per-channel gamma and beta
    TimmName("layernorm"),  # over each token's C (a ViT's tokens)
)
def layernorm(num_features: int, spatial: bool, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """Layer normalisation (Ba, Kiros & Hinton 2016): each example over all its features.

    Vectors: torch's LayerNorm over the C features. Feature maps: over (C, H, W) with a
    per-channel gamma and beta, i.e. GroupNorm with one group (Wu & He 2018, Sec. 3.1), which
    needs no image size up front.
    """
    if spatial:
        return nn.GroupNorm(1, num_features, eps=eps, affine=affine)
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


@offers_timm(TimmName("groupnorm", {"groups": "num_groups"}))
def groupnorm(
    num_features: int, spatial: bool, groups: int = 32, eps: float = 1e-5, affine: bool = True
) -> nn.Module:
    """Group normalisation (Wu & He 2018): each example over groups of C/groups channels (and
    their positions). groups=1 is LayerNorm, groups=C is InstanceNorm; the paper uses 32."""
    if groups < 1 or num_features % groups:
        divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
        raise ValueError(
            f"norm.groups={groups} must divide the {num_features} channels of this layer; valid values "
            f"for it: {divisors} (set norm.groups, or model.width so that every layer's channels are "
            "a multiple of it)."
        )
    return nn.GroupNorm(groups, num_features, eps=eps, affine=affine)


@offers_timm(Itself(spatial=True, inputs="maps"))  # torch's would read a ViT's (N, L, C) as one image
def instancenorm(
    num_features: int,
    spatial: bool,
    eps: float = 1e-5,
    affine: bool = True,
    momentum: float = 0.1,
    track_running_stats: bool = False,
) -> nn.Module:
    """Instance normalisation (Ulyanov, Vedaldi & Lempitsky 2016): each example and channel over
    its spatial positions. Feature maps only: a vector's channel has one position, so every
    output would be beta whatever the input."""
    if not spatial:
        raise ValueError(
            "norm=instancenorm normalises each channel over its spatial positions (H, W), but this layer "
            "outputs vectors (N, C) with none, so every unit would output a constant. Use it with a "
            "convolutional model (model=cnn, model=resnet), or use norm=layernorm, which normalises each "
            "example over its features."
        )
    return nn.InstanceNorm2d(
        num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )


@offers_timm()  # nothing passed: the architecture keeps its own norm layers
def native(num_features: int, spatial: bool) -> nn.Module:
    """`norm=native`: the architecture's own norm layers (a timm model's, model=timm's default).

    trainlab's own networks build their norm layers from this axis and have none of their own,
    so they cannot take it; a timm model never calls it (it offers timm the architecture's own)."""
    raise ConfigError(
        "norm=native keeps an architecture's own norm layers (model=timm); trainlab's own models "
        "(mlp, cnn, resnet) take their norm from this axis: pick another option, e.g. norm=batchnorm "
        "(conf/norm/ lists them)."
    )
