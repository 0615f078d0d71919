"""A plain multi-layer perceptron: flatten, `depth` hidden blocks of `width` units (each optionally
followed by dropout), a linear head."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from trainlab.layers.stages import Split, blocks_and_head
from trainlab.models.blocks import Position, layer_block
from trainlab.norm.factories import NormFactory


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        norm: NormFactory,
        activation: Callable[[], nn.Module],
        depth: int = 2,
        width: int = 256,
        position: Position = "pre_act",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 0 or width < 1:
            raise ValueError(
                f"model=mlp needs model.depth >= 0 and model.width >= 1, got model.depth={depth}, model.width={width}."
            )
        features = math.prod(input_shape)
        blocks = []
        for _ in range(depth):
            in_features = features
            blocks.append(
                layer_block(
                    lambda out, bias, i=in_features: nn.Linear(i, out, bias=bias),
                    width,
                    norm,
                    activation,
                    position,
                    spatial=False,
                    dropout=dropout,
                )
            )
            features = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x.flatten(1)))

    def transfer_split(self) -> Split:
        """TransferNetwork: one stage per hidden layer, then the head."""
        return blocks_and_head(self)
