"""LSUV, layer-sequential unit-variance initialisation (Mishkin & Matas 2016, "All you need is a
good init"): a data-driven scheme that needs one batch of training inputs."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
from torch import nn

from trainlab.init.core import check_positive, first_inputs
from trainlab.init.schemes import orthogonal
from trainlab.layers.hooks import KeepBuffers, capture, device_of, forward_order
from trainlab.layers.weights import weight_layers
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)


def lsuv(
    network: nn.Module,
    batches: Iterable,
    tol: float = 0.1,
    max_iter: int = 10,
    bias: float = 0.0,
) -> dict[str, float]:
    """Orthonormal weights, then each layer rescaled so that its output has variance 1 on a batch.

    Algorithm 1 of the paper: pre-initialise every weight layer with an orthonormal matrix (Saxe et
    al. 2014, gain 1); then, layer by layer in forward order, run the batch through the network and
    divide the layer's weights by sqrt(Var[output]) until |Var[output] - 1| < tol or `max_iter`
    rescalings. Keeps the forward variance at exactly 1 at every weight layer's output (measured,
    not derived, so it holds for any activation and architecture).

    `batches`: the training loader (passed by apply_init); the first batch is used. The network
    runs in training mode (norm layers use batch statistics, as in training); buffers such as
    BatchNorm's running statistics are restored afterwards. Returns `<layer>/output_var` and
    `<layer>/iterations` per layer.
    """
    check_positive("init.tol", tol)
    if max_iter < 1:
        raise ConfigError(f"init.max_iter={max_iter!r} must be >= 1.")
    orthogonal(network, nonlinearity="linear", bias=bias)
    inputs = first_inputs(batches, device_of(network))
    stats: dict[str, float] = {}
    with KeepBuffers(network), torch.no_grad():
        network.train()
        for name, layer in forward_order(network, inputs, weight_layers(network)):
            variance = capture(network, layer, inputs).var().item()
            iterations = 0
            while abs(variance - 1.0) >= tol and iterations < max_iter:
                if not variance > 0 or not math.isfinite(variance):
                    log.warning(f"lsuv: {name} outputs variance {variance} on the batch; left unscaled.")
                    break
                layer.weight.div_(math.sqrt(variance))
                iterations += 1
                variance = capture(network, layer, inputs).var().item()
            stats[f"{name}/output_var"] = variance
            stats[f"{name}/iterations"] = iterations
            log.info(f"lsuv: {name} output variance {variance:.4f} after {iterations} rescaling(s)")
    return stats
