"""Before a run resumes from a checkpoint: is it the same network and optimizer?

A resumed run (`ckpt_path=`) builds its network and optimizer from its own config, then Lightning
loads the checkpoint's weights and optimizer state into them. When the config describes another
network than the checkpoint's (`model.width=64` after a run with 32; another data set's shape or
classes), Lightning fails with its raw `size mismatch`, naming tensors; another optimizer class
gets state it cannot use. `check_resumable` compares the checkpoint's stored configs (its
`hyper_parameters`) and weights with the run's, before any weight is loaded, and names the
settings: an error when the weights do not fit or the optimizer differs, a warning when the
network config differs but the weights fit (e.g. another dropout rate or activation: the run
trains with its own config, the checkpoint's weights loaded into it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainlab.utils.config import ConfigError

# How the data's part of the network config is named in messages.
DATA_KEYS = {"input_shape": "the data's input shape", "num_classes": "the data's number of classes"}
NEW_RUN = "use transfer.pretrained_ckpt=<the checkpoint> to start a new run from its weights"
SHOWN = 6  # differences named in a message; the rest are counted


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a plain config tree (lists are values, compared whole)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _comparable(value: Any) -> Any:
    return [_comparable(v) for v in value] if isinstance(value, list | tuple) else value


def differences(stored: Mapping, current: Mapping) -> list[tuple[str, Any, Any]]:
    """(dotted key, the checkpoint's value, this run's value) for every key whose values differ;
    a key only one side has gets None on the other."""
    old, new = flatten(stored), flatten(current)
    return [
        (key, old.get(key), new.get(key))
        for key in dict.fromkeys([*old, *new])
        if _comparable(old.get(key)) != _comparable(new.get(key))
    ]


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """`model.width: the checkpoint has 32, this run 64; ...`"""
    texts = [
        f"{DATA_KEYS.get(key, key)}: the checkpoint has {old!r}, this run {new!r}"
        for key, old, new in changes
    ]
    more = f"; and {len(texts) - SHOWN} more" if len(texts) > SHOWN else ""
    return "; ".join(texts[:SHOWN]) + more


def shape_mismatches(
    stored: Mapping[str, Any], current: Mapping[str, tuple[int, ...]], strict: bool = True
) -> list[str]:
    """The tensors that would not load: a name with another shape, and (`strict`, as Lightning
    loads) a name only one side has."""
    found = [
        f"{name}: {tuple(stored[name].shape)} in the checkpoint, {tuple(shape)} here"
        for name, shape in current.items()
        if name in stored and tuple(stored[name].shape) != tuple(shape)
    ]
    if strict:
        found += [f"{name}: not in the checkpoint" for name in current if name not in stored]
        found += [f"{name}: not in this network" for name in stored if name not in current]
    return found


def check_resumable(
    checkpoint: Mapping[str, Any],
    hparams: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    origin: str,
    strict: bool = True,
) -> list[str]:
    """Refuse (ConfigError, naming the settings) a resume whose network does not fit the
    checkpoint's weights or whose optimizer class differs; return warnings for network settings
    that differ although the weights fit.

    Args:
        checkpoint: the checkpoint's contents (weights_only, targets upgraded).
        hparams: the run's module hyperparameters (`network`, `optimizer`, ... as stored).
        shapes: {name: shape} of the run's module state_dict.
        origin: what the messages start with, e.g. "ckpt_path='.../last.ckpt'".
        strict: whether the module loads strictly (LightningModule.strict_loading).
    """
    stored = checkpoint.get("hyper_parameters") or {}
    network_changes = differences(stored.get("network") or {}, hparams.get("network") or {})
    mismatched = shape_mismatches(checkpoint.get("state_dict") or {}, shapes, strict)
    if mismatched:
        if network_changes and stored.get("network"):
            raise ConfigError(
                f"{origin}: this run's network is not the checkpoint's: {describe(network_changes)}. "
                f"Resume with the same architecture (repeat the overrides the run was started with), "
                f"or {NEW_RUN}."
            )
        more = f"; and {len(mismatched) - SHOWN} more" if len(mismatched) > SHOWN else ""
        raise ConfigError(
            f"{origin}: the checkpoint's weights do not fit this run's network ({'; '.join(mismatched[:SHOWN])}"
            f"{more}). Resume with the architecture the checkpoint was trained with, or {NEW_RUN}."
        )
    stored_target = (stored.get("optimizer") or {}).get("_target_")
    target = (hparams.get("optimizer") or {}).get("_target_")
    if stored_target and target and stored_target != target:
        raise ConfigError(
            f"{origin}: optimizer: the checkpoint has {stored_target}, this run {target}; an optimizer's "
            "state (momenta, moments) does not carry over to another kind. Resume with the checkpoint's "
            f"optimizer (optimizer.lr and the other settings may change), or {NEW_RUN}."
        )
    if network_changes:
        return [
            f"{origin}: resuming with network settings other than the checkpoint's, which its weights "
            f"fit: {describe(network_changes)}. This run trains with its own settings."
        ]
    return []


def check_length(checkpoint: Mapping[str, Any], max_epochs: Any, max_steps: Any, origin: str) -> None:
    """Refuse a run length the checkpoint has already passed (a resume continues a run; it does
    not shorten one), naming the setting."""
    # the epochs Lightning counts as trained when it restores the loops (its current_epoch)
    progress = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}
    epoch = (progress.get("current") or {}).get("processed", checkpoint.get("epoch"))
    step = checkpoint.get("global_step")
    bounded = [
        ("trainer.max_epochs", max_epochs, epoch, "epochs"),
        ("trainer.max_steps", max_steps, step, "optimizer steps"),
    ]
    for key, limit, reached, unit in bounded:
        if isinstance(limit, int) and limit >= 0 and isinstance(reached, int) and limit < reached:
            raise ConfigError(
                f"{origin}: {key}={limit}, but the checkpoint has already trained {reached} {unit}; a "
                f"resume continues a run: give a larger {key} (or -1 for no limit)."
            )
