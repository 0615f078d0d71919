"""`activation=native`: the architecture's own activations (a timm model's, model=timm's default)."""

from __future__ import annotations

from torch import nn

from trainlab.layers.timm_offers import offers_timm
from trainlab.utils.config import ConfigError


@offers_timm()  # nothing passed: the architecture keeps its own activations
def native() -> nn.Module:
    """trainlab's own networks build every activation from this axis and have none of their own,
    so they cannot take it; a timm model never calls it (it offers timm the architecture's own)."""
    raise ConfigError(
        "activation=native keeps an architecture's own activations (model=timm); trainlab's own "
        "models (mlp, cnn, resnet) take theirs from this axis: pick another option, e.g. "
        "activation=relu (conf/activation/ lists them)."
    )
