"""Reading checkpoint files: tensors and plain data only, and only trusted `_target_`s.

Every checkpoint trainlab reads (`trainlab.eval`, `transfer.pretrained_ckpt`, a resumed run's
`ckpt_path`) is read by `read_checkpoint`: `torch.load(weights_only=True)`, so unpickling runs no
code, with errors that name the setting, the file and the fix. What rebuilds from a checkpoint's
contents reads it with `trusted_checkpoint`, which also refuses any `_target_` outside the
allow-list (trainlab.checkpoints.trusted_targets) before anything is imported or built.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainlab.checkpoints.trusted_targets import check_targets, trusted_object
from trainlab.utils.config import ConfigError, moved_target

# The LightningModule class that wrote a checkpoint (trainlab.models.rebuildable).
CLASS_KEY = "trainlab_module"
# The configs Lightning rebuilds from: the module's and the DataModule's arguments, and the names
# Lightning 0.7 gave the module's (`load_from_checkpoint` still merges them into its arguments).
HYPERPARAMETERS = ("hyper_parameters", "datamodule_hyper_parameters", "hparams", "module_arguments")
# Lightning calls a callable found here on the arguments (`hparams_type`), and builds a module with
# the instantiator named in them (LightningCLI's): trainlab writes neither.
HPARAMS_TYPES = ("hparams_type", "datamodule_hparams_type")
INSTANTIATOR = "_instantiator"
EXAMPLE = "logs/train/runs/<time>/checkpoints/last.ckpt"


def _named(setting: str, path: Path) -> str:
    return f"{setting}={str(path)!r}"


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:limit] if text else ''}".rstrip(": ")


def read_checkpoint(path: str | os.PathLike, setting: str = "ckpt_path") -> dict[str, Any]:
    """The contents of a Lightning checkpoint, loaded with `torch.load(weights_only=True)`.

    A ConfigError names `setting` and the file when it is missing, is no checkpoint, or holds
    pickled objects other than tensors and plain data (which weights_only refuses to build).
    """
    import torch

    path = Path(path).expanduser()
    named = _named(setting, path)
    if not path.is_file():
        raise ConfigError(
            f"{named} is not a file; give the path of a checkpoint a trainlab run wrote, e.g. {EXAMPLE}."
        )
    try:
        # mmap: tensors stay on disk until used (only for zip files, which torch.save writes)
        checkpoint = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path), weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise ConfigError(
                f"{named} is not a checkpoint ({_first_line(error)}); give a .ckpt a trainlab run wrote, e.g. {EXAMPLE}."
            ) from error
        refused = [line.strip() for line in str(error).splitlines() if "Unsupported" in line]
        raise ConfigError(
            f"{named} holds pickled Python objects, not only tensors and plain data "
            f"({'; '.join(refused[:1]) or 'refused by torch.load(weights_only=True)'}). trainlab "
            "loads checkpoints with weights_only=True, which runs no code from the file, and a "
            f"checkpoint a trainlab run wrote holds no such objects: give one of those, e.g. {EXAMPLE}."
        ) from error
    except Exception as error:  # torch raises KeyError, EOFError, RuntimeError, ... for other files
        raise ConfigError(
            f"{named} is not a PyTorch checkpoint ({_first_line(error)}); give a .ckpt a trainlab run "
            f"wrote, e.g. {EXAMPLE}."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"{named} is a PyTorch file but not a Lightning checkpoint (no state_dict); give a .ckpt "
            f"a trainlab run wrote, e.g. {EXAMPLE}."
        )
    return checkpoint


def _upgrade_targets(node: Any) -> Any:
    """A copy of a stored config tree with every `_target_` in a moved module renamed."""
    if isinstance(node, dict):
        return {
            key: (moved_target(value) or value)
            if key == "_target_" and isinstance(value, str)
            else _upgrade_targets(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_upgrade_targets(item) for item in node]
    return node


# Keys a checkpoint's model config held before the weight sources moved to the transfer group:
# they were never arguments of the network (trainlab.transfer.aliases).
OLD_WEIGHT_SOURCES = ("pretrained", "pretrained_file", "pretrained_ckpt", "pretrained_depth")


def upgrade(checkpoint: dict[str, Any]) -> bool:
    """Rename, in place, the `_target_`s of modules that moved since the checkpoint was written
    (utils.config.MOVED_MODULES), and drop the weight sources its model config held before they
    moved to the transfer group; True if anything changed."""
    changed = False
    for part in HYPERPARAMETERS:
        if isinstance(checkpoint.get(part), dict):
            upgraded = _upgrade_targets(checkpoint[part])
            changed |= upgraded != checkpoint[part]
            checkpoint[part] = upgraded
    model = ((checkpoint.get("hyper_parameters") or {}).get("network") or {}).get("model")
    if isinstance(model, dict) and any(key in model for key in OLD_WEIGHT_SOURCES):
        for key in OLD_WEIGHT_SOURCES:
            model.pop(key, None)
        changed = True
    return changed


def loadable(
    path: str | os.PathLike, trusted: Iterable[str] | str | None = None
) -> tuple[dict[str, Any], str | os.PathLike | io.BytesIO]:
    """`trusted_checkpoint`, and what to hand Lightning's `load_from_checkpoint`: the file itself,
    or the upgraded contents in memory when modules it names have moved since it was written."""
    checkpoint, upgraded = _trusted(path, "ckpt_path", trusted)
    if not upgraded:
        return checkpoint, path
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return checkpoint, buffer


def trusted_checkpoint(
    path: str | os.PathLike, setting: str = "ckpt_path", trusted: Iterable[str] | str | None = None
) -> dict[str, Any]:
    """`read_checkpoint`, then refuse it (ConfigError naming the key path and the target) if its
    module class or any `_target_` of its stored configs is not trusted (`trusted`: extra
    packages the user trusts, as the `trusted_targets` setting). Targets in modules that moved
    since the file was written are renamed first (`upgrade`)."""
    return _trusted(path, setting, trusted)[0]


def _trusted(
    path: str | os.PathLike, setting: str, trusted: Iterable[str] | str | None
) -> tuple[dict[str, Any], bool]:
    checkpoint = read_checkpoint(path, setting)
    upgraded = upgrade(checkpoint)  # old module paths -> today's, before the check
    origin = f"{_named(setting, Path(path).expanduser())}: "
    for part in HYPERPARAMETERS:
        if isinstance(checkpoint.get(part), dict) and INSTANTIATOR in checkpoint[part]:
            raise ConfigError(
                f"{origin}{part}.{INSTANTIATOR}={checkpoint[part][INSTANTIATOR]!r}: trainlab builds modules "
                "from their arguments and never stores an instantiator; this file was not written by trainlab."
            )
    for key in HPARAMS_TYPES:
        if not isinstance(checkpoint.get(key), str | None):
            raise ConfigError(
                f"{origin}{key}={checkpoint[key]!r} is not a name: Lightning would call it on the stored "
                "arguments; this file was not written by trainlab."
            )
    check_targets(
        {k: checkpoint[k] for k in HYPERPARAMETERS if k in checkpoint}, trusted=trusted, origin=origin
    )
    if CLASS_KEY in checkpoint:
        trusted_object(checkpoint[CLASS_KEY], CLASS_KEY, trusted, origin)
    return checkpoint, upgraded
