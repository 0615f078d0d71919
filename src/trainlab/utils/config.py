"""Config helpers: plain containers, flattening, and checks that catch bad input before training."""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

# Config groups that are study axes: W&B tags, report columns, the first branches of the printed tree.
STUDY_AXES = (
    "data", "model", "init", "norm", "activation", "augment", "mix", "loss", "transfer", "optimizer", "scheduler",
)  # fmt: skip


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the valid choices."""


# Modules that moved, old name -> new name: checkpoints written before the move are upgraded on
# reading (trainlab.checkpoints.reading), and a config that names an old path is told the new one.
MOVED_MODULES = {
    "trainlab.nn": "trainlab.activations",
    "trainlab.data.augment": "trainlab.data.transforms",
    "trainlab.models.schedulers": "trainlab.optim.schedulers",
}


def moved_target(name: str) -> str | None:
    """The current dotted path of `name` if it names something in a module that moved, else None."""
    for old, new in MOVED_MODULES.items():
        if name.startswith(old + "."):
            return new + name[len(old) :]
    return None


def plain(value: Any) -> Any:
    """OmegaConf nodes -> plain dicts/lists, resolved (checkpoints and W&B want plain data)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: one W&B config column per leaf, groupable in dashboards."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def require_values(cfg: DictConfig) -> None:
    """Fail on `???` values with the keys to set, instead of deep inside a constructor."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        examples = " ".join(f"{k}=<value>" for k in missing)
        raise ConfigError(
            f"Missing required value(s): {', '.join(missing)}. Set them on the command line: {examples}"
        )


# Groups whose option is a function that trainlab calls later, so their config must be a partial
# (`_partial_: true`): Hydra then returns the function with its knobs bound instead of calling it.
CALLED_LATER = {
    "init": "a scheme is called with the network once it is built",
    "norm": "a norm factory is called with each normalised layer's number of features",
    "activation": "an activation is built anew for every layer of the network",
}


def require_partial(group: str, node: Any) -> None:
    """Fail clearly when a `CALLED_LATER` group's `_target_` config lacks `_partial_: true`
    (Hydra would call the function right away, without the arguments trainlab gives it later)."""
    if isinstance(node, Mapping) and node.get("_target_") and not node.get("_partial_"):
        raise ConfigError(
            f"{group} config {node['_target_']!r} needs `_partial_: true`: {CALLED_LATER[group]}. "
            f"Add `_partial_: true` to its YAML in conf/{group}/ (or +{group}._partial_=true on the command line)."
        )


# --- argument checking against the target's signature ---------------------------------------


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    items = _fixed_items(hint)
    if items is not None:
        return f"a list of {len(items)} ({', '.join(_type_name(a) for a in items)})"
    return getattr(hint, "__name__", str(hint))


def _fixed_items(hint: Any) -> tuple | None:
    """The item types of a fixed-length tuple annotation (`tuple[float, float]`: Adam's betas), else
    None (`tuple[int, ...]` and a bare `tuple` have no fixed length)."""
    arguments = typing.get_args(hint)
    if (
        typing.get_origin(hint) is not tuple
        or not arguments
        or arguments[-1] is Ellipsis
        or arguments == ((),)
    ):
        return None
    return arguments


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` fits the annotation; annotations we cannot judge are accepted."""
    origin = typing.get_origin(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if value is None:
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    items = _fixed_items(hint)
    if items is not None:  # one value per item: a list too short fails deep inside the target otherwise
        return (
            isinstance(value, list | tuple)
            and len(value) == len(items)
            and all(_matches(v, h) for v, h in zip(value, items, strict=True))
        )
    if container in (list, tuple, Sequence, typing.Sequence):
        return isinstance(value, list | tuple)
    if container in (dict, Mapping, typing.Mapping):
        return isinstance(value, Mapping)
    if inspect.isclass(hint) and origin is None:
        if issubclass(hint, os.PathLike):
            return isinstance(value, str | os.PathLike)
        # A config holds primitives and containers: it cannot hold a Tensor, a Module, ...
        return isinstance(value, hint)
    return True


def _signature(target: Any):
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations that do not resolve are not checked
        hints = {}
    return inspect.signature(target), hints


def check_arguments(node: Any, where: str) -> None:
    """Check a `_target_` config's keys and value types against the target's signature.

    Recurses into nested `_target_` configs. Raises ConfigError naming the key, the value,
    the expected type or choices, and the valid argument names.
    """
    node = plain(node)
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_arguments(item, f"{where}[{i}]")
        return
    if not isinstance(node, Mapping):
        return
    target_path = node.get("_target_")
    if target_path is None:
        for key, value in node.items():
            check_arguments(value, f"{where}.{key}")
        return
    try:
        target = get_object(target_path)
    except Exception as error:
        moved = moved_target(str(target_path))
        hint = f"; it moved: use _target_: {moved}" if moved else ""
        raise ConfigError(f"{where}._target_={target_path!r} cannot be imported: {error}{hint}") from error
    signature, hints = _signature(target)
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            valid = [
                n
                for n, p in parameters.items()
                if p.kind is not inspect.Parameter.VAR_POSITIONAL and n != "self"
            ]
            raise ConfigError(
                f"{where}.{key}: {target_path} has no argument {key!r}; valid arguments: {', '.join(valid)}."
            )
        hint = hints.get(key)
        default = parameters[key].default
        if hint is not None and not (value is None and default is None) and not _matches(value, hint):
            raise ConfigError(
                f"{where}.{key}={value!r} ({type(value).__name__}) does not fit {target_path}: expected {_type_name(hint)}."
            )
        if isinstance(value, Mapping | list):
            check_arguments(value, f"{where}.{key}")
