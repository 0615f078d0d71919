"""Running part of a network on data with forward hooks: one module's input or output, the order
a forward pass calls layers in, and buffers left as they were (data-driven init schemes, layer
statistics)."""

from __future__ import annotations

import torch
from torch import nn


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once the wanted tensor is captured."""


def capture(
    network: nn.Module, module: nn.Module, inputs: torch.Tensor, what: str = "output"
) -> torch.Tensor:
    """`module`'s input or output when `network` runs on `inputs`; the rest of the pass is skipped."""
    store: dict[str, torch.Tensor] = {}

    def take_input(_module, args):
        store["value"] = args[0]
        raise _Reached

    def take_output(_module, _args, output):
        store["value"] = output
        raise _Reached

    if what == "input":
        handle = module.register_forward_pre_hook(take_input)
    else:
        handle = module.register_forward_hook(take_output)
    try:
        network(inputs)
    except _Reached:
        pass
    finally:
        handle.remove()
    if "value" not in store:
        raise RuntimeError(f"{type(module).__name__} is not called by {type(network).__name__}.forward.")
    return store["value"]


def forward_order(
    network: nn.Module, inputs: torch.Tensor, layers: list[tuple[str, nn.Module]]
) -> list[tuple[str, nn.Module]]:
    """`layers` in the order a forward pass on `inputs` calls them (layers it never calls dropped)."""
    order: list[int] = []
    handles = [
        layer.register_forward_hook(lambda *_, i=i: order.append(i) if i not in order else None)
        for i, (_, layer) in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            network(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [layers[i] for i in order]


def batch_inputs(batch) -> torch.Tensor:
    """The inputs of a batch: `(inputs, targets, ...)` or the inputs alone."""
    return batch[0] if isinstance(batch, list | tuple) else batch


def device_of(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class KeepBuffers:
    """Restore every buffer (BatchNorm running statistics, ...) on exit: the forward passes of a
    data-driven scheme measure the network, they are not training steps."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def __enter__(self) -> None:
        self.saved = {name: b.detach().clone() for name, b in self.network.named_buffers()}
        self.training = self.network.training

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for name, buffer in self.network.named_buffers():
                buffer.copy_(self.saved[name])
        self.network.train(self.training)
