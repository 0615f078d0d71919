"""A network described by a checkpoint is sized before it is allocated.

`trainlab.eval` rebuilds a run's network from the config its checkpoint stores. The allow-list
(trainlab.checkpoints.trusted_targets) decides which code builds it, not its sizes: an MLP with
`model.width=10**7` is a trusted target, and building it would allocate what the file says (4 TB
is refused by the allocator, 20 GB would be built). So the described network is first built on
PyTorch's meta device, which records shapes and allocates nothing, and compared with the weights
the checkpoint holds: the same tensor names and shapes, or a clear error. After that the real
network takes as much memory as the weights in the file. Building on the meta device still makes
the Python objects of every layer (`model.depth=10**9` would take hours): the build is stopped
once it has registered more tensors than the file holds, with room for layers built and replaced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)

from trainlab.checkpoints.resume_check import SHOWN, shape_mismatches
from trainlab.models.factory import build_network
from trainlab.utils.config import ConfigError

PREFIX = "net."  # the network's tensors in a StudyModule's state_dict
# Tensors a build may register beyond the file's (layers made and replaced, e.g. a norm swapped in).
SLACK_FACTOR, SLACK = 2, 64


class _TooManyTensors(Exception):
    pass


def described_network(checkpoint: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The network config a checkpoint stores (`build_network`'s arguments), or None."""
    for part in ("hyper_parameters", "module_arguments"):  # the second: Lightning 0.7's name
        network = (checkpoint.get(part) or {}).get("network")
        if isinstance(network, Mapping):
            return network
    return None


def check_weights_fit(network: Mapping[str, Any], state_dict: Mapping[str, Any], origin: str) -> None:
    """Build `network` on the meta device and refuse it (ConfigError) unless its tensors are the
    `net.` tensors of `state_dict`, name for name and shape for shape."""
    stored = {name: tensor for name, tensor in state_dict.items() if name.startswith(PREFIX)}
    net = _on_meta(network, limit=SLACK_FACTOR * len(stored) + SLACK, origin=origin)
    shapes = {f"{PREFIX}{name}": tuple(tensor.shape) for name, tensor in net.state_dict().items()}
    mismatched = shape_mismatches(stored, shapes)
    if not mismatched:
        return
    described = sum(math.prod(shape) for shape in shapes.values())
    held = sum(math.prod(tuple(tensor.shape)) for tensor in stored.values())
    more = f"; and {len(mismatched) - SHOWN} more" if len(mismatched) > SHOWN else ""
    raise ConfigError(
        f"{origin}: the checkpoint's weights do not fit the network its hyperparameters describe "
        f"(size mismatch: {'; '.join(mismatched[:SHOWN]).replace(' here', ' described')}{more}); it "
        f"describes {described:,} values, its weights hold {held:,}. Nothing was built. It was not "
        "written by a trainlab run as it is (another program wrote it, or it was edited): give the "
        ".ckpt the run wrote."
    )


def _on_meta(network: Mapping[str, Any], limit: int, origin: str) -> torch.nn.Module:
    """`build_network(**network)` on the meta device, stopped after `limit` tensors."""
    registered = 0

    def count(*_: Any) -> None:
        nonlocal registered
        registered += 1
        if registered > limit:
            raise _TooManyTensors

    hooks = [
        register_module_parameter_registration_hook(count),
        register_module_buffer_registration_hook(count),
    ]
    try:
        with torch.device("meta"):  # shapes only: no memory, whatever the sizes
            return build_network(**network)
    except Exception as error:
        if registered <= limit:
            raise
        raise ConfigError(
            f"{origin}: the network its hyperparameters describe has more tensors than its weights "
            f"(more than {limit}; e.g. a model.depth the weights do not have). Nothing was built. It "
            "was not written by a trainlab run as it is: give the .ckpt the run wrote."
        ) from error
    finally:
        for hook in hooks:
            hook.remove()
