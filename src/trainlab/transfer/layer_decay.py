"""Layer-wise learning-rate decay (`transfer.layer_decay`): the head learns at the full rate and
each layer below it at `layer_decay` times the rate of the layer above, i.e. a layer at depth d
from the top at `layer_decay ** d` (ELECTRA, Clark et al. 2020; BEiT, Bao et al. 2021; timm's
`train.py --layer-decay`). Fine-tuning then moves the general low-level features least.

What a layer is comes from the network:

- a timm model: timm's own grouping for layer decay, `timm.optim.param_groups_layer_decay`
  (the model's fine `group_matcher`): resnet: the stem, then each residual block (`layer1.0`,
  `layer1.1`, ...), the classifier on top; vit: the embeddings, each transformer block (the final
  norm with the last), the head. trainlab.models.timm_backbone's adapter provides it;
- any other network (trainlab's mlp, cnn, resnet): its transfer stages (trainlab.layers.stages):
  the head at depth 0, the last stage at depth 1, ..., the first stage at depth `len(stages)`.

A network's TransferNetwork view may define its own layers with an optional method
`decay_layers(layer_decay) -> list[Layer]`, as the timm adapter does.

Only learning rates change: weight decay stays what the optimizer config says for every
parameter (timm's function would also drop it for biases and norm weights; trainlab keeps that a
separate choice, so that turning layer decay on changes one thing).
"""

from __future__ import annotations

import math
from numbers import Real

from torch import nn

from trainlab.layers.stages import Split
from trainlab.layers.transferable import Layer, transfer_view
from trainlab.utils.config import ConfigError


def check_layer_decay(value: object) -> float | None:
    """`transfer.layer_decay` as a factor in (0, 1], or None (off)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value <= 1:
        raise ConfigError(
            f"transfer.layer_decay={value!r}: give a factor in (0, 1] (e.g. 0.75: each layer learns "
            "at 0.75 times the rate of the layer above it, the head at optimizer.lr; 1: all at the same "
            "rate), or null for no layer-wise decay."
        )
    return float(value)


def stage_layers(net: nn.Module, split: Split, layer_decay: float) -> list[Layer]:
    """The layers of a network without its own: its stages in forward order, then its head."""
    params = dict(net.named_parameters())
    count = len(split.stages)
    layers = [
        Layer(stage.name, tuple(k for k in stage.keys if k in params), layer_decay ** (count - index))
        for index, stage in enumerate(split.stages)
    ]
    return [*layers, Layer("head", tuple(k for k in split.head.keys if k in params), 1.0)]


def decay_layers(net: nn.Module, split: Split, layer_decay: float) -> list[Layer]:
    """The network's layers with their rate scales: its view's `decay_layers` when it has one, else
    its stages. Every trainable parameter must be in one layer."""
    view = transfer_view(net)
    own = getattr(view, "decay_layers", None)
    layers = own(layer_decay) if callable(own) else stage_layers(net, split, layer_decay)
    placed = {name for layer in layers for name in layer.params}
    loose = [n for n, p in net.named_parameters() if p.requires_grad and n not in placed]
    if loose:
        raise ConfigError(
            f"transfer.layer_decay: {type(net).__name__}'s layers leave out trainable parameters "
            f"({', '.join(loose[:5])}); its `decay_layers()` must place every one."
        )
    bad = [layer.name for layer in layers if not (math.isfinite(layer.scale) and layer.scale > 0)]
    if bad:  # timm's min_scale/no_opt_scale are not used: no layer may stop learning
        raise ConfigError(f"transfer.layer_decay={layer_decay}: layers {bad} got no positive rate.")
    return layers
