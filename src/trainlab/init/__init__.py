"""Initialisation schemes: one function each, applied to a built network."""

from __future__ import annotations

from hydra.utils import instantiate
from torch import nn


def apply_init(network: nn.Module, init_cfg, datamodule=None) -> None:
    """Instantiate the `init` config (a partial of a scheme function) and apply it to `network`."""
    scheme = instantiate(init_cfg)
    scheme(network)
