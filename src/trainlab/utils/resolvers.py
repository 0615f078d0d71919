"""OmegaConf resolvers that the configs use (registered when trainlab is imported)."""

from __future__ import annotations

from datetime import datetime

from omegaconf import OmegaConf


def timestamp() -> str:
    """Microsecond timestamp: two runs started in the same second still get their own directory."""
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")


def register() -> None:
    if not OmegaConf.has_resolver("trainlab_timestamp"):
        OmegaConf.register_new_resolver("trainlab_timestamp", timestamp, use_cache=True)
