"""The paths a checkpoint carries are data too: confined to the run's own directories.

Lightning restores each callback's state from the checkpoint it resumes, and ModelCheckpoint then
acts on the paths that state names: it deletes its "previous" best and last files, and tests the
best one. Its test of whether a file lies in its directory is lexical (`<dir>/../../victim.txt`
passes) and does not follow symlinks, so a crafted `last.ckpt` could make a resume delete a file
anywhere. `ConfinedCheckpointPaths` rewrites the callback states of every checkpoint Lightning
restores (`on_load_checkpoint` runs for every callback before any callback's `load_state_dict`):
a path that does not resolve, symlinks followed, inside the directory of the callback it belongs
to (a ModelCheckpoint's `dirpath`; the run directory for any other callback) is dropped with a
warning. Nothing is ever deleted, read or written outside the run because a file said so.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

# The path-valued entries of a ModelCheckpoint's state (its state_dict), besides best_k_models' keys.
MODEL_CHECKPOINT_PATHS = ("best_model_path", "last_model_path", "kth_best_model_path")
# Other callbacks' state entries that hold paths are recognised by their names.
PATH_WORDS = ("path", "dir", "file")


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def inside(path: Any, root: str | os.PathLike) -> bool:
    """True if `path` is the directory `root` or lies inside it: both resolved with symlinks followed
    (a local path), or both normalised (a remote one, e.g. s3://bucket/run/checkpoints)."""
    if not isinstance(path, str | os.PathLike) or not str(path):
        return False
    path, root = str(path).removeprefix("file://"), str(root).removeprefix("file://")
    if _is_remote(path) or _is_remote(root):
        if not (_is_remote(path) and _is_remote(root)):
            return False
        path, root = posixpath.normpath(path), posixpath.normpath(root)
        return path.startswith(root.rstrip("/") + "/")
    resolved, top = Path(path).expanduser().resolve(), Path(root).expanduser().resolve()
    return resolved.is_relative_to(top)


class _Dropper:
    """Keeps what lies inside `root`; warns once per dropped path, naming the state and key."""

    def __init__(self, root: str | os.PathLike, owner: str, warn: Callable[[str], None]) -> None:
        self.root, self.owner, self.warn = root, owner, warn
        self.dropped: list[str] = []

    def keeps(self, key: str, path: Any) -> bool:
        if inside(path, self.root):
            return True
        self.dropped.append(f"{key}={path!r}")
        self.warn(
            f"The checkpoint's state of {self.owner} names {key}={path!r}, which is not inside "
            f"{str(self.root)!r} (symlinks followed): dropped, nothing there is read, written or deleted."
        )
        return False


def confine_model_checkpoint_state(
    state: dict[str, Any],
    dirpath: str | os.PathLike,
    mode: str,
    owner: str = "ModelCheckpoint",
    warn: Callable[[str], None] = log.warning,
) -> list[str]:
    """Drop, in place, every path of a ModelCheckpoint state that is not inside `dirpath`; keep
    the rest consistent (the best and k-th best are among the kept best-k files, as Lightning
    expects). Returns what was dropped, as `key=path` texts."""
    dropper = _Dropper(dirpath, owner, warn)
    if "dirpath" in state and state["dirpath"] is not None and not dropper.keeps("dirpath", state["dirpath"]):
        state.pop("dirpath")
    best_k = state.get("best_k_models")
    if isinstance(best_k, dict):
        state["best_k_models"] = best_k = {
            path: score for path, score in best_k.items() if dropper.keeps("best_k_models", path)
        }
    for key in MODEL_CHECKPOINT_PATHS:
        value = state.get(key)
        if value and not dropper.keeps(key, value):
            state[key] = ""
    if isinstance(best_k, dict) and best_k:  # the best and k-th best kept among the best-k files
        best, worst = (min, max) if mode == "min" else (max, min)
        if state.get("best_model_path") and state["best_model_path"] not in best_k:
            state["best_model_path"] = ""
        if not state.get("best_model_path"):
            state["best_model_path"] = best(best_k, key=best_k.get)
            state["best_model_score"] = best_k[state["best_model_path"]]
        if state.get("kth_best_model_path") not in best_k:
            state["kth_best_model_path"] = worst(best_k, key=best_k.get)
            state["kth_value"] = best_k[state["kth_best_model_path"]]
    elif isinstance(best_k, dict) and state.get("kth_best_model_path"):  # no best-k file left
        state["kth_best_model_path"] = ""
    if not state.get("best_model_path") and not best_k:
        state["best_model_score"] = None
    return dropper.dropped


def confine_state_paths(
    state: Any, root: str | os.PathLike, owner: str, warn: Callable[[str], None] = log.warning
) -> list[str]:
    """Drop, in place, from any other callback's state the entries whose key names a path
    (`*path*`, `*dir*`, `*file*`) and whose value is not inside `root`."""
    dropper = _Dropper(root, owner, warn)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key in list(node):
                value, named = node[key], f"{where}.{key}" if where else str(key)
                pathlike = isinstance(key, str) and any(word in key.lower() for word in PATH_WORDS)
                if pathlike and isinstance(value, str | os.PathLike) and str(value):
                    if not dropper.keeps(named, value):
                        node[key] = None
                elif pathlike and isinstance(value, list | tuple):
                    node[key] = [v for v in value if not isinstance(v, str) or dropper.keeps(named, v)]
                else:
                    walk(value, named)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")

    walk(state, "")
    return dropper.dropped


def confine_callback_states(
    checkpoint: dict[str, Any], callbacks: list[pl.Callback], run_dir: str | os.PathLike
) -> list[str]:
    """Confine, in place, the paths in `checkpoint["callbacks"]`: each ModelCheckpoint's to its
    own `dirpath`, every other state's to `run_dir`. Returns what was dropped."""
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        return []
    dirpaths = {
        key: callback
        for callback in callbacks
        if isinstance(callback, ModelCheckpoint)
        for key in (callback.state_key, callback._legacy_state_key)
    }
    dropped = []
    for key, state in states.items():
        if not isinstance(state, dict):
            continue
        callback = dirpaths.get(key)
        if callback is not None and callback.dirpath is not None:
            dropped += confine_model_checkpoint_state(state, callback.dirpath, callback.mode, str(key))
        else:  # another callback's state (or one of a callback this run lacks, which Lightning skips)
            dropped += confine_state_paths(state, run_dir, str(getattr(key, "__qualname__", key)))
    return dropped


class ConfinedCheckpointPaths(pl.Callback):
    """Before any callback restores its state from a checkpoint (resume, or testing `best`),
    drops every path in those states that lies outside the run (`confine_callback_states`).
    Added by trainlab.builders.build_trainer to every trainer: not a study's choice."""

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        confine_callback_states(checkpoint, trainer.callbacks, trainer.default_root_dir)
