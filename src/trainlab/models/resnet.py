"""A small CIFAR-style residual network (He et al. 2016): a stem conv, `depth` residual blocks in
stages of doubling width and halving size, global average pooling, a linear head."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from trainlab.layers.stages import Split, blocks_and_head
from trainlab.layers.traits import removes_channel_mean
from trainlab.models.blocks import POSITIONS, Position, dropout_layer, layer_block, width_multiplier
from trainlab.norm.factories import NormFactory


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """out = shortcut(x) + F(x), F = conv3x3 -> norm, act (in `position` order) -> conv3x3 -> norm.

    With `dropout` > 0, channel-wise dropout sits between the two convs of F, where Zagoruyko &
    Komodakis ("Wide residual networks", 2016) put it: the identity path is never dropped. With 0
    there is no dropout module, so the layout (and checkpoints) are those of a block without it.

    The shortcut is the identity, or a 1x1 conv (+ norm) where the block changes size or width.
    There is no activation after the addition: the identity path stays clean as in He et al.'s
    "Identity mappings" (2016), and every activation follows a weight layer, so a k-piece Maxout
    works (conv1 is k times wider). A conv has a bias unless a norm that subtracts each channel's mean follows it.

    Fixup (trainlab.init.fixup) finds the block by `branch_layers()` and uses its scalars: biases
    before conv1, before the activation, before conv2 and after the branch, and a multiplier on
    the branch. They exist in every block (so checkpoints have one layout) but are frozen at 0 and
    1, i.e. do nothing, unless init=fixup makes them trainable.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm: NormFactory,
        activation: Callable[[], nn.Module],
        position: Position = "pre_act",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"norm.position={position!r} is not one of {list(POSITIONS)}.")
        self.pre_act = position == "pre_act"
        act = activation()
        wide = out_channels * width_multiplier(act)  # a k-piece Maxout takes k times the channels
        norm1 = norm(wide if self.pre_act else out_channels, True)
        norm2 = norm(out_channels, True)
        # a conv needs no bias where the next layer subtracts each channel's mean
        cancels_bias = removes_channel_mean(norm2)
        # registered in the order the forward pass runs them
        self.conv1 = conv3x3(in_channels, wide, stride, bias=not (self.pre_act and cancels_bias))
        if self.pre_act:
            self.norm1, self.act = norm1, act
        else:
            self.act, self.norm1 = act, norm1
        # a plain None, not a module, at 0: the block's modules stay those of a block without dropout
        self.dropout = next(iter(dropout_layer(dropout, spatial=True)), None)
        self.conv2 = conv3x3(out_channels, out_channels, bias=not cancels_bias)
        self.norm2 = norm2
        if stride != 1 or in_channels != out_channels:
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not cancels_bias)
            self.shortcut = nn.Sequential(projection, norm(out_channels, True))
        else:
            self.shortcut = nn.Identity()
        self.fixup_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(()), requires_grad=False) for _ in range(4)]
        )
        self.fixup_scale = nn.Parameter(torch.ones(()), requires_grad=False)

    @property
    def has_norm(self) -> bool:
        return not isinstance(self.norm2, nn.Identity)

    def branch_layers(self) -> list[nn.Module]:
        """The weight layers of the residual branch, input to output (Fixup zero-inits the last)."""
        return [self.conv1, self.conv2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias1a, bias1b, bias2a, bias2b = self.fixup_biases
        x = x + bias1a
        out = self.conv1(x)
        # pre_act: conv -> norm -> act; post_act: conv -> act -> norm
        out = self.act(self.norm1(out) + bias1b) if self.pre_act else self.norm1(self.act(out + bias1b))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.norm2(self.conv2(out + bias2a))
        return self.shortcut(x) + out * self.fixup_scale + bias2b


class ResNet(nn.Module):
    """Stem (conv3x3 -> norm/act) to `width` channels, then `depth` residual blocks split as evenly
    as possible into `stages` stages (earlier stages take the remainder); stage s has
    `width * 2**s` channels and halves the map with a stride-2 first block while it is >= 2
    pixels. An activation, global average pooling and a linear head, so any input size works.

    `position` orders norm and activation (pre_act: conv -> norm -> act; post_act: conv -> act ->
    norm) in the stem and in each branch. `blocks` holds the stem and the residual blocks in
    order (layer-wise pretraining trains them one by one). `dropout` > 0 adds channel-wise
    dropout inside each residual branch (see ResidualBlock); the stem has none.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        norm: NormFactory,
        activation: Callable[[], nn.Module],
        depth: int = 6,
        width: int = 16,
        stages: int = 3,
        position: Position = "pre_act",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or stages < 1:
            raise ValueError(
                f"model=resnet needs model.depth, model.width and model.stages >= 1, got model.depth={depth}, "
                f"model.width={width}, model.stages={stages}."
            )
        channels, height, _ = input_shape
        stem = lambda out, bias: conv3x3(channels, out, bias=bias)  # noqa: E731
        blocks: OrderedDict[str, nn.Module] = OrderedDict(
            stem=layer_block(stem, width, norm, activation, position, spatial=True)
        )
        per_stage = [depth // stages + (s < depth % stages) for s in range(min(stages, depth))]
        channels = width
        for s, count in enumerate(per_stage):
            out_channels = width * 2**s
            for b in range(count):
                stride = 2 if s > 0 and b == 0 and height >= 2 else 1
                height = (height + 1) // 2 if stride == 2 else height
                blocks[f"stage{s + 1}_block{b + 1}"] = ResidualBlock(
                    channels, out_channels, stride, norm, activation, position, dropout
                )
                channels = out_channels
        self.blocks = nn.Sequential(blocks)
        # One activation after the last addition, before pooling (as in He et al. 2016): without
        # it, a per-channel norm ending every branch and shortcut (instance norm) would leave the
        # pooled features equal to the norms' betas, whatever the input. A k-piece Maxout here
        # pools groups of k channels.
        self.final_act = activation()
        pieces = width_multiplier(self.final_act)
        if channels % pieces:
            raise ValueError(
                f"model=resnet: the last stage's {channels} channels do not split into groups of "
                f"activation.pieces={pieces}; choose model.width so that width * 2**(stages-1) is a multiple."
            )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels // pieces, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.final_act(self.blocks(x))).flatten(1))

    def transfer_split(self) -> Split:
        """TransferNetwork: the stem, then each residual block; then the head."""
        return blocks_and_head(self)
