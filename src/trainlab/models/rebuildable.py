"""LightningModules whose checkpoints name their class, so that `trainlab.eval` rebuilds the
module a run trained (the Classifier, or a study's own module such as NoisyRegression).

A checkpoint is data, never code: the class it names and every `_target_` of its stored configs
must be trusted (trainlab.checkpoints.trusted_targets) before anything is imported or built, and it
is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from trainlab.checkpoints.reading import CLASS_KEY, loadable, trusted_checkpoint
from trainlab.checkpoints.trusted_targets import trusted_object
from trainlab.models.described_network import check_weights_fit, described_network
from trainlab.utils.config import ConfigError

DEFAULT_CLASS = "trainlab.models.classifier.Classifier"  # checkpoints written before the key existed
__all__ = ["CLASS_KEY", "DEFAULT_CLASS", "RebuildableModule", "module_class"]


class RebuildableModule(pl.LightningModule):
    """Stores `<module>.<class>` in every checkpoint under CLASS_KEY; the constructor's arguments
    are the hyperparameters Lightning stores (plain data), so `module_class(path)
    .load_from_checkpoint(path)` gives back the same module."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        trusted_targets: Iterable[str] | str | None = None,
        **kwargs: Any,
    ):
        """Lightning's `load_from_checkpoint`, for checkpoints whose targets are all trusted
        (`trusted_targets`: packages of your own to trust too), loaded with weights_only=True.
        The network it describes is sized on the meta device and checked against its weights
        before anything is allocated (trainlab.models.described_network)."""
        checkpoint, source = loadable(checkpoint_path, trusted=trusted_targets)
        network = kwargs.get("network") or described_network(checkpoint)
        if network is not None:
            check_weights_fit(network, checkpoint["state_dict"], f"ckpt_path={str(checkpoint_path)!r}")
        try:
            return super().load_from_checkpoint(
                source,
                map_location=map_location,
                hparams_file=hparams_file,
                strict=strict,
                weights_only=True,
                **kwargs,
            )
        except RuntimeError as error:  # the weights and the network the hyperparameters describe
            if "Error(s) in loading state_dict" not in str(error):
                raise
            details = "; ".join(line.strip() for line in str(error).splitlines()[1:3])
            raise ConfigError(
                f"ckpt_path={str(checkpoint_path)!r}: the checkpoint's weights do not fit the network "
                f"its hyperparameters describe ({details[:300]}). It was not written by a trainlab run "
                "as it is (another program wrote it, or it was edited): give the .ckpt the run wrote."
            ) from error


def module_class(
    path: str | os.PathLike, trusted_targets: Iterable[str] | str | None = None
) -> type[RebuildableModule]:
    """The trainlab module class that wrote the checkpoint at `path`.

    The whole checkpoint is checked first (trusted_checkpoint): its class and every `_target_`
    the module and DataModule would build. `trusted_targets` are packages of your own to trust.
    """
    checkpoint = trusted_checkpoint(path, trusted=trusted_targets)
    named = f"ckpt_path={str(Path(path).expanduser())!r}"
    name = checkpoint.get(CLASS_KEY)
    if name is None:
        if "network" not in (checkpoint.get("hyper_parameters") or {}):
            raise ConfigError(
                f"{named} was not written by trainlab: it names no trainlab module ({CLASS_KEY}) and "
                "holds no network config; give a .ckpt a trainlab run wrote."
            )
        name = DEFAULT_CLASS
    cls = trusted_object(name, CLASS_KEY, trusted_targets, f"{named}: ")
    if not (inspect.isclass(cls) and issubclass(cls, RebuildableModule)):
        raise ConfigError(
            f"{named}: {CLASS_KEY}={name!r} is not a trainlab module (a subclass of "
            "trainlab.models.rebuildable.RebuildableModule, e.g. the Classifier); the checkpoint "
            "was not written by trainlab."
        )
    return cls
