"""A small VGG-style CNN: `depth` blocks of two 3x3 convolutions, each block halving the size."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainlab.layers.stages import Split, blocks_and_head
from trainlab.models.blocks import Position, layer_block
from trainlab.norm.factories import NormFactory


class CNN(nn.Module):
    """Block i has `width * 2**i` channels; max-pooling after each block while the map is >= 2
    pixels; global average pooling and a linear head, so any input size works. With `dropout` > 0
    each convolution (with its norm and activation) is followed by channel-wise dropout
    (`blocks.dropout_layer`)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        norm: NormFactory,
        activation: Callable[[], nn.Module],
        depth: int = 3,
        width: int = 32,
        convs_per_block: int = 2,
        position: Position = "pre_act",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or convs_per_block < 1:
            raise ValueError(
                f"model=cnn needs model.depth, model.width and model.convs_per_block >= 1, got model.depth={depth}, "
                f"model.width={width}, model.convs_per_block={convs_per_block}."
            )
        channels, height, _ = input_shape
        blocks = []
        for i in range(depth):
            out_channels = width * 2**i
            for _ in range(convs_per_block):
                in_channels = channels
                conv = lambda out, bias, c=in_channels: nn.Conv2d(c, out, 3, padding=1, bias=bias)  # noqa: E731
                blocks.append(layer_block(conv, out_channels, norm, activation, position, True, dropout))
                channels = out_channels
            if height >= 2:
                blocks.append(nn.MaxPool2d(2))
                height //= 2
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)).flatten(1))

    def transfer_split(self) -> Split:
        """TransferNetwork: one stage per block of `depth` (its convolutions share their output
        width: each block doubles it), with the pooling after it; then the head."""
        return blocks_and_head(self, group=_output_channels)


def _output_channels(layer: nn.Module) -> int:
    return next(m for m in layer.modules() if isinstance(m, nn.Conv2d)).out_channels
