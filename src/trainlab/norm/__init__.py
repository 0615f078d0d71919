"""Normalisation layers, one factory function each.

A factory takes the number of features and whether the input is a feature map
(N, C, H, W) or a vector (N, C), and returns the layer. The `norm` config group
instantiates one as a partial; `position` (pre_act or post_act) is read by the networks.
"""

from torch import nn

from trainlab.norm.batchnorm_scratch import BatchNormScratch
from trainlab.norm.factories import (
    NormFactory,
    batchnorm,
    batchnorm_scratch,
    ghost_batchnorm,
    groupnorm,
    instancenorm,
    layernorm,
    none,
)
from trainlab.norm.ghost_batchnorm import GhostBatchNorm

# Layers that normalise with batch statistics and keep population estimates (running_mean,
# running_var): what precise BN recomputes and what freezing BN statistics must catch.
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    BatchNormScratch,  # GhostBatchNorm is one
)


def removes_channel_mean(layer: nn.Module) -> bool:
    """Whether `layer` subtracts each channel's mean (BN family, instance norm): a bias added
    just before it is then cancelled, so the weight layer before it needs none. Layer and group
    norm subtract a mean over several channels and do not cancel a per-channel bias."""
    return isinstance(layer, (*BATCHNORM_TYPES, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d))


__all__ = [
    "BATCHNORM_TYPES",
    "BatchNormScratch",
    "GhostBatchNorm",
    "NormFactory",
    "batchnorm",
    "batchnorm_scratch",
    "ghost_batchnorm",
    "groupnorm",
    "instancenorm",
    "layernorm",
    "none",
    "removes_channel_mean",
]
