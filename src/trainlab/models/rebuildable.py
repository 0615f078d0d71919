"""LightningModules whose checkpoints name their class, so that `trainlab.eval` rebuilds the
module a run trained (the Classifier, or a study's own module such as NoisyRegression)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

CLASS_KEY = "trainlab_module"
DEFAULT_CLASS = "trainlab.models.classifier.Classifier"  # checkpoints written before the key existed


class RebuildableModule(pl.LightningModule):
    """Stores `<module>.<class>` in every checkpoint under CLASS_KEY; the constructor's arguments
    are the hyperparameters Lightning stores (plain data), so `module_class(path)
    .load_from_checkpoint(path)` gives back the same module."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"


def module_class(path: str | Path) -> type[pl.LightningModule]:
    """The LightningModule class that wrote the checkpoint at `path`."""
    import torch
    from hydra.utils import get_class

    # mmap: only the few bytes of this key are read, not the weights
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return get_class(checkpoint.get(CLASS_KEY, DEFAULT_CLASS))
