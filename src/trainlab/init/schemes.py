"""Named initialisation schemes (`conf/init/<name>.yaml` points at one of these)."""

from __future__ import annotations

from torch import nn


def framework_default(network: nn.Module) -> None:
    """Keep PyTorch's own per-layer initialisation (Kaiming-uniform with a=sqrt(5) for weights)."""
