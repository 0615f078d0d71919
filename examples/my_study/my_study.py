"""A study's own schemes, outside trainlab: an init scheme, a norm factory and an activation.

Each is named by a YAML file in this study's `conf/` (conf/init/sparse.yaml,
conf/norm/channel_groups.yaml, conf/activation/swish_beta.yaml); trainlab finds them once `conf/`
is on Hydra's search path and this module on the import path. Nothing in trainlab is edited: the
norm and the activation also become a timm model's layers (`model=timm`), as themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.init.core import check_positive, init_layers


def sparse(network: nn.Module, nonzero: int = 15, std: float = 1.0, bias: float = 0.0) -> dict[str, float]:
    """Sparse initialisation (Martens 2010, sec. 5): each unit gets exactly `nonzero` incoming
    weights from N(0, std**2), the others are 0. Unlike a dense N(0, 1/fan_in) the weights are
    not shrunk as a layer widens: a unit's input variance stays nonzero * std**2 whatever the fan-in,
    and units differ from the start because each sees other inputs.

    Returns the fraction of nonzero weights (logged as init/sparse_density).
    """
    check_positive("init.nonzero", nonzero)
    check_positive("init.std", std)
    kept, total = 0, 0

    def fill(weight: torch.Tensor) -> None:
        nonlocal kept, total
        rows = weight.view(weight.shape[0], -1)  # one row per output unit (conv: C_in x kh x kw)
        k = min(int(nonzero), rows.shape[1])
        chosen = torch.rand_like(rows).argsort(dim=1)[:, :k]  # k distinct inputs per unit
        rows.zero_().scatter_(1, chosen, torch.randn(rows.shape[0], k) * std)
        kept, total = kept + rows.shape[0] * k, total + rows.numel()

    init_layers(network, fill, bias)
    return {"sparse_density": kept / total}


def channel_groups(
    num_features: int, spatial: bool, channels_per_group: int = 4, eps: float = 1e-5, affine: bool = True
) -> nn.Module:
    """Group normalisation with a fixed number of channels per group instead of a fixed number of
    groups (Wu & He 2018, Table 3b): wide layers get more groups. The group count is the largest
    divisor of num_features that gives groups of at least `channels_per_group` channels."""
    check_positive("norm.channels_per_group", channels_per_group)
    groups = max(1, num_features // int(channels_per_group))
    while num_features % groups:
        groups -= 1
    return nn.GroupNorm(groups, num_features, eps=eps, affine=affine)


class SwishBeta(nn.Module):
    """Swish with a trainable beta per layer, x * sigmoid(beta * x) (Ramachandran, Zoph & Le 2017,
    "Searching for activation functions", Sec. 4): beta = 1 is SiLU, a large beta approaches ReLU,
    beta = 0 is the linear x / 2. For beta > 0 it is ReLU-shaped (its output has the sign of its
    input, nearly 0 for very negative ones), which it declares for trainlab's init gains and
    layer statistics (trainlab.layers.traits)."""

    init_nonlinearity = "relu"
    is_rectifier = True

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)
