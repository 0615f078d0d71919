"""What trainlab.transfer needs from a network: the `TransferNetwork` protocol.

Freezing stages (`transfer.freeze_depth`), discriminative learning rates
(`transfer.backbone_lr_mult`) and loading a backbone (`transfer.pretrained_*`) all ask one
question of the network: which of its tensors form each backbone stage, in forward order, and
which form the head. A network answers it with one method,

    def transfer_split(self) -> trainlab.layers.stages.Split

returning the backbone stages (input to output) and the head, each a `Stage`: a name and the
state-dict keys (parameters and buffers, relative to the network) it owns. Every key belongs to
at most one stage; the head is never frozen and never loaded from pretrained weights (it is new
for the data's classes). trainlab's MLP, CNN and ResNet implement it (`blocks` + `head`, with
`trainlab.layers.stages.blocks_and_head`); a network whose class cannot be changed (a timm
model) gets it from an adapter registered with `register_adapter`, as
trainlab.models.timm_backbone does.

From the split alone trainlab.transfer freezes the first `freeze_depth` stages (their parameters,
and the running statistics of their norm layers), builds the optimizer's groups (head at
optimizer.lr, backbone at optimizer.lr * backbone_lr_mult) and copies the first
`pretrained_depth` stages from a trainlab checkpoint, by name and shape. Two more methods are
optional: `pretrained_state(network, file) -> (tensors, source, notes)`, the network's own
published weights (timm's hub or a local timm file: `transfer.pretrained`,
`transfer.pretrained_file`); a network without it loads weights from trainlab checkpoints only.
And `decay_layers(layer_decay) -> list[Layer]`, its layers for
layer-wise LR decay (`transfer.layer_decay`); without it the layers are the stages and the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import nn

from trainlab.utils.config import ConfigError

if TYPE_CHECKING:
    from trainlab.layers.stages import Split


@dataclass(frozen=True)
class Layer:
    """A layer of layer-wise decay: its parameters (names relative to the network) and its learning
    rate relative to optimizer.lr (before transfer.backbone_lr_mult)."""

    name: str
    params: tuple[str, ...]
    scale: float


@runtime_checkable
class TransferNetwork(Protocol):
    """A network trainlab.transfer can freeze, give discriminative rates and load a backbone into."""

    def transfer_split(self) -> Split:
        """The backbone stages in forward order and the head (state-dict keys of the network)."""
        ...


# (does this adapter apply to the network?, the adapter): for networks whose class is not ours
_ADAPTERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], TransferNetwork]]] = []


def register_adapter(
    applies: Callable[[nn.Module], bool], adapter: Callable[[nn.Module], TransferNetwork]
) -> None:
    """Let networks for which `applies(net)` is true be seen through `adapter(net)`."""
    _ADAPTERS.append((applies, adapter))


def transfer_view(net: nn.Module) -> TransferNetwork:
    """`net` itself when it implements TransferNetwork, else its registered adapter; a network
    with neither is a clear error that names the missing method."""
    if callable(getattr(net, "transfer_split", None)):
        return net
    for applies, adapter in _ADAPTERS:
        if applies(net):
            return adapter(net)
    raise ConfigError(
        f"trainlab.transfer cannot use {type(net).__module__}.{type(net).__qualname__}: it does not "
        "implement trainlab.transfer.TransferNetwork, i.e. it has no `transfer_split()` method "
        "returning a trainlab.layers.stages.Split (its backbone stages in forward order and its "
        "head). A network with `blocks` (nn.Sequential) and `head` attributes can return "
        "`trainlab.layers.stages.blocks_and_head(self)`."
    )
