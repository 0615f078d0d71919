"""A network as transfer learning sees it: backbone stages in forward order, then the head.

`transfer.freeze_depth=k` freezes the first k stages and `transfer.pretrained_depth=k` loads the
first k; a stage means the same idea in every model, and each network says what its stages are
through `transfer_split()` (the TransferNetwork protocol, trainlab.layers.transferable):

- `mlp`: each hidden layer (a block of `net.blocks`: linear -> norm -> activation);
- `cnn`: each conv block of `model.depth`: its `convs_per_block` convolutions (with their norms
  and activations) and the max-pooling after them;
- `resnet`: the stem, then each residual block;
- `timm`: the stem, then each block group of timm's coarse `group_matcher` (resnet: layer1..4,
  vit: each transformer block), see trainlab.models.timm_backbone.

The head (`net.head`, timm's `get_classifier()`) is never frozen and never loaded from
pretrained weights: it is new for the data's classes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from torch import nn

from trainlab.layers.traits import keeps_running_stats
from trainlab.layers.transferable import transfer_view
from trainlab.utils.config import ConfigError


@dataclass(frozen=True)
class Stage:
    """A named part of a network: its state-dict keys (parameters and buffers, relative to the network)."""

    name: str
    keys: tuple[str, ...]

    def parameters(self, net: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(net.named_parameters())
        return {k: params[k] for k in self.keys if k in params}

    def numel(self, net: nn.Module) -> int:
        return sum(p.numel() for p in self.parameters(net).values())

    def norm_layers(self, net: nn.Module) -> list[nn.Module]:
        """Normalisation layers with running statistics (BatchNorm, trainlab's own BN) in this stage."""
        keys = set(self.keys)
        return [
            module
            for name, module in net.named_modules()
            if name and keeps_running_stats(module) and f"{name}.running_mean" in keys
        ]


@dataclass(frozen=True)
class Split:
    stages: list[Stage]
    head: Stage

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def backbone_keys(self, depth: int | None = None) -> list[str]:
        return [k for stage in self.stages[:depth] for k in stage.keys]


def split_network(net: nn.Module) -> Split:
    """The backbone stages and the head of `net`, as its TransferNetwork view declares them."""
    return transfer_view(net).transfer_split()


def blocks_and_head(net: nn.Module, group: Callable[[nn.Module], Hashable] | None = None) -> Split:
    """The split of a network made of `net.blocks` (an nn.Sequential) and `net.head`: one stage
    per child of `blocks` with weights (children without weights, such as pooling, join the
    stage before them), or, with `group`, one stage per run of consecutive children with equal
    `group(child)`. Weights outside `blocks` and `head` are an error: no stage would own them."""
    keys = list(net.state_dict().keys())
    groups: list[tuple[object, list[str]]] = []  # (group key, child names)
    for name, child in net.blocks.named_children():
        if not list(child.state_dict()):  # pooling, dropout: part of the stage before it
            if groups:
                groups[-1][1].append(name)
            else:
                groups.append((None, [name]))
            continue
        key = group(child) if group is not None else id(child)
        if groups and groups[-1][0] == key:
            groups[-1][1].append(name)
        else:
            groups.append((key, [name]))
    stages = []
    for _, names in groups:
        prefixes = tuple(f"blocks.{n}." for n in names)
        label = f"blocks.{names[0]}" if len(names) == 1 else f"blocks.{names[0]}-{names[-1]}"
        stages.append(Stage(label, tuple(k for k in keys if k.startswith(prefixes))))
    stages = [s for s in stages if s.keys]
    head = Stage("head", tuple(k for k in keys if k.startswith("head.")))
    covered = {k for s in [*stages, head] for k in s.keys}
    loose = [k for k in keys if k not in covered]
    if loose:
        raise ConfigError(
            f"{type(net).__name__} has weights outside `blocks` and `head` ({', '.join(loose[:5])}): "
            "trainlab.transfer cannot place them in a stage; its `transfer_split()` must say where they go."
        )
    return Split(stages, head)


def some_keys(keys: list[str], shown: int = 8) -> str:
    """The first `shown` keys, and how many there are in all when there are more."""
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def describe_keys(keys: list[str], net: nn.Module) -> str:
    """A short name for a group of keys: `layer1`, `blocks.3`, `conv1+bn1`, `blocks.5+norm`."""
    tops: dict[str, set[str]] = {}
    for key in keys:
        parts = key.split(".")
        tops.setdefault(parts[0], set()).add(parts[1] if len(parts) > 2 and parts[1].isdigit() else "")
    names = []
    for top, seconds in tops.items():
        module = getattr(net, top, None)
        several = isinstance(module, nn.Module) and len(list(module.children())) > 1
        one_child = len(seconds) == 1 and "" not in seconds
        names.append(f"{top}.{next(iter(seconds))}" if one_child and several else top)
    return "+".join(names)


def resolve_depth(depth: int | str | None, split: Split, key: str) -> int:
    """`transfer.freeze_depth` / `transfer.pretrained_depth` as a number of stages: an int in
    0..len(stages), or `all` (null means all for pretrained_depth)."""
    count = len(split.stages)
    if depth is None or depth == "all":
        return count
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= count:
        raise ConfigError(
            f"{key}={depth!r}: this network's backbone has {count} stages "
            f"({', '.join(split.names)}); give a number from 0 to {count}, or `all`."
        )
    return depth
