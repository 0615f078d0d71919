"""Normalisation layers, one factory function each.

A factory takes the number of features and whether the input is a feature map
(N, C, H, W) or a vector (N, C), and returns the layer. The `norm` config group
instantiates one as a partial; `position` (pre_act or post_act) is read by the networks.
"""

from trainlab.norm.factories import NormFactory, batchnorm, none

__all__ = ["NormFactory", "batchnorm", "none"]
