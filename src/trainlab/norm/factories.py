"""Factories for the `norm` config group: `factory(num_features, spatial) -> nn.Module`."""

from __future__ import annotations

from typing import Protocol

from torch import nn


class NormFactory(Protocol):
    def __call__(self, num_features: int, spatial: bool) -> nn.Module: ...


def none(num_features: int, spatial: bool) -> nn.Module:
    """No normalisation (an identity, so networks keep one layout for every norm)."""
    return nn.Identity()


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
