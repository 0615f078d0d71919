"""Normalisation layers, one factory function each.

A factory takes the number of features and whether the input is a feature map
(N, C, H, W) or a vector (N, C), and returns the layer. The `norm` config group
instantiates one as a partial; `position` (pre_act or post_act) is read by the networks.
What a norm layer is (keeps running statistics, removes the channel mean) is asked of
trainlab.layers.traits.
"""

from trainlab.norm.batchnorm_scratch import BatchNormScratch
from trainlab.norm.factories import (
    NormFactory,
    batchnorm,
    batchnorm_scratch,
    ghost_batchnorm,
    groupnorm,
    instancenorm,
    layernorm,
    native,
    none,
)
from trainlab.norm.ghost_batchnorm import GhostBatchNorm

__all__ = [
    "BatchNormScratch",
    "GhostBatchNorm",
    "NormFactory",
    "batchnorm",
    "batchnorm_scratch",
    "ghost_batchnorm",
    "groupnorm",
    "instancenorm",
    "layernorm",
    "native",
    "none",
]
