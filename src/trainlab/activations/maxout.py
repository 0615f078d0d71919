"""Maxout (Goodfellow et al. 2013, "Maxout networks"): the max of k linear pieces per unit."""

from __future__ import annotations

import torch
from torch import nn

from trainlab.layers.timm_offers import refuses_timm


@refuses_timm("maxout widens the layer before it, which a timm architecture does not do")
class Maxout(nn.Module):
    """Takes C * k features (dim 1) and returns C: unit c is the max of inputs c*k ... c*k + k - 1.

    Works on vectors (N, C*k) and feature maps (N, C*k, H, W). The layer before it must be k times
    wider: `width_multiplier = pieces` tells trainlab's networks to build it so
    (trainlab.models.blocks). `init_nonlinearity = 'linear'`: the gain the init schemes use (for
    k = 2 and zero-mean Gaussian pieces, E[max(a, b)**2] = E[a**2], so the max keeps the second
    moment as a linear unit does).
    """

    init_nonlinearity = "linear"

    def __init__(self, pieces: int = 2) -> None:
        super().__init__()
        if not isinstance(pieces, int) or pieces < 1:
            raise ValueError(
                f"activation.pieces={pieces!r} must be an integer >= 1 (linear pieces per unit)."
            )
        self.pieces = pieces
        self.width_multiplier = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels % self.pieces:
            raise ValueError(
                f"Maxout with {self.pieces} pieces needs a multiple of {self.pieces} features, got {channels}."
            )
        return x.unflatten(1, (channels // self.pieces, self.pieces)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
