"""What a weight layer is: the layers whose weights the init schemes draw and layer statistics
measure (Linear and Conv1d/2d/3d); norm layers, pooling and activations are not."""

from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, layer) pairs of `network`'s weight layers, in module order."""
    return [(name, m) for name, m in network.named_modules() if isinstance(m, WEIGHT_LAYERS)]
