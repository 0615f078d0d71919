"""Which `_target_`s trainlab builds from a checkpoint: a checkpoint is data, never code.

`trainlab.eval` rebuilds a run's module and DataModule from the configs its checkpoint stores,
and building a config calls the callables its `_target_`s name. A checkpoint that passes
`torch.load(weights_only=True)` can still name any callable there (`os.system` as the data
source, `builtins.open` as a norm), so every target in a checkpoint is checked against an
allow-list before anything is imported or called:

- trainlab's own building blocks: the packages that hold networks and study modules
  (trainlab.models), schedules (trainlab.optim), norms (trainlab.norm), activations (trainlab.activations), data sources
  (trainlab.data.sources) and transforms (trainlab.data.transforms); not the rest of trainlab,
  some of which writes files (summaries, reports) where its arguments say;
- from libraries, only the kinds of object the shipped configs name: torch.nn modules,
  torch.optim optimizers and LR schedulers, Albumentations transforms (not, e.g.,
  `albumentations.save`, which writes a file).

A target must be a class or a function defined inside a trusted package too: a module's imports
are its attributes, so `torch.nn.modules.module.torch.load` is written under torch.nn but is
torch.load, and is refused.

Targets of your own (a study's module, a norm in your package) are trusted explicitly, by
package or by object: `trusted_targets=[my_inits]` in the train or eval config, or the
environment variable TRAINLAB_TRUSTED_TARGETS=my_inits,my_pkg.MyModule (comma-separated).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from trainlab.utils.config import ConfigError

ENV_VAR = "TRAINLAB_TRUSTED_TARGETS"
SETTING = "trusted_targets"
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Trusted:
    """A dotted path (a package, module or object) whose contents may be built from checkpoints;
    with `bases`, only subclasses of one of them (dotted names of classes)."""

    path: str
    bases: tuple[str, ...] = ()
    what: str = ""  # for messages: what is trusted under `path`

    def covers(self, name: str) -> bool:
        return name == self.path or name.startswith(self.path + ".")

    def describe(self) -> str:
        return self.what or self.path


TRUSTED = (
    Trusted("trainlab.models"),
    Trusted("trainlab.optim"),
    Trusted("trainlab.norm"),
    Trusted("trainlab.activations"),
    Trusted("trainlab.data.sources"),
    Trusted("trainlab.data.transforms"),
    Trusted("torch.nn", ("torch.nn.Module",), "torch.nn modules"),
    Trusted(
        "torch.optim",
        ("torch.optim.Optimizer", "torch.optim.lr_scheduler.LRScheduler"),
        "torch.optim optimizers and LR schedulers",
    ),
    Trusted(
        "albumentations",
        (
            "albumentations.core.transforms_interface.BasicTransform",
            "albumentations.core.composition.BaseCompose",
        ),
        "Albumentations transforms",
    ),
)


def trusted_rules(extra: Iterable[str] | str | None = None) -> tuple[Trusted, ...]:
    """trainlab's allow-list plus what the user trusts: `extra` (the `trusted_targets` setting)
    and the TRAINLAB_TRUSTED_TARGETS environment variable."""
    if isinstance(extra, str):
        extra = [extra]
    named = [*(extra or []), *os.environ.get(ENV_VAR, "").split(",")]
    rules = []
    for entry in named:
        if not isinstance(entry, str):
            raise ConfigError(
                f"{SETTING}: {entry!r} is not a dotted name like my_package or my_package.MyModule."
            )
        if not entry.strip():
            continue  # an empty environment variable, or a trailing comma
        path = entry.strip().rstrip(".")
        if not _DOTTED.fullmatch(path):
            raise ConfigError(
                f"{SETTING} / {ENV_VAR}: {entry!r} is not a dotted name like my_package or my_package.MyModule."
            )
        rules.append(Trusted(path))
    # the user's first: what they trust is trusted whole, also inside a package with `bases` here
    return tuple(rules) + TRUSTED


def _allowed_text(rules: tuple[Trusted, ...]) -> str:
    return ", ".join(rule.describe() for rule in rules)


def _refuse(origin: str, where: str, name: Any, problem: str, rules: tuple[Trusted, ...]) -> ConfigError:
    return ConfigError(
        f"{origin}{where}={name!r} {problem}. A checkpoint is data, not code: trainlab builds from it "
        f"only {_allowed_text(rules)}. If this is code of your own and you trust where the file "
        f"comes from, name its package in {SETTING} (e.g. {SETTING}=[my_package] on the command "
        f"line, or {ENV_VAR}=my_package)."
    )


def _rule_for(name: str, rules: tuple[Trusted, ...]) -> Trusted | None:
    return next((rule for rule in rules if rule.covers(name)), None)


def _check_name(name: Any, where: str, rules: tuple[Trusted, ...], origin: str) -> None:
    """The written name only: nothing is imported."""
    if not isinstance(name, str):
        raise _refuse(origin, where, name, "is not a dotted name", rules)
    if _rule_for(name, rules) is None:
        raise _refuse(origin, where, name, "is not a trusted target", rules)


def _resolve(name: str, where: str, rules: tuple[Trusted, ...], origin: str) -> Any:
    """The object `name` resolves to, as Hydra resolves it, if it is one that is trusted.

    Only called on names under a trusted path, so only trusted packages are imported."""
    from hydra.utils import get_object

    try:
        target = get_object(name)
    except Exception as error:
        raise ConfigError(f"{origin}{where}={name!r} cannot be imported: {error}") from error
    if not (inspect.isclass(target) or inspect.isroutine(target)):
        raise _refuse(origin, where, name, "is not a class or a function", rules)
    home = f"{getattr(target, '__module__', None)}.{getattr(target, '__qualname__', name)}"
    rule = _rule_for(home, rules)
    if rule is None:  # e.g. a module's import reached as its attribute
        raise _refuse(origin, where, name, f"is {home}, which is not a trusted target", rules)
    if rule.bases:
        bases = tuple(get_object(base) for base in rule.bases)
        if not (inspect.isclass(target) and issubclass(target, bases)):
            kinds = ", ".join(base.rsplit(".", 1)[-1] for base in rule.bases)
            problem = f"is not one of the {rule.describe()} ({kinds} subclasses) trusted under {rule.path}"
            raise _refuse(origin, where, name, problem, rules)
    return target


def trusted_object(
    name: Any, where: str, trusted: Iterable[str] | str | None = None, origin: str = ""
) -> Any:
    """The object a dotted name (e.g. a checkpoint's module class) resolves to, if trusted;
    otherwise a ConfigError that names `where`, the name and what is allowed."""
    rules = trusted_rules(trusted)
    _check_name(name, where, rules, origin)
    return _resolve(name, where, rules, origin)


def _targets(node: Any, where: str, origin: str) -> Iterator[tuple[str, Any]]:
    """(key path, target) of every `_target_` in a plain config tree, lists included."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, path, origin)
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            yield from _targets(item, f"{where}[{index}]", origin)
    elif isinstance(node, str) and "${" in node:
        # Building a config resolves interpolations, and a resolver can make a new config node
        # (`${oc.create:{_target_: ...}}`) after this check; trainlab stores resolved configs.
        raise ConfigError(
            f"{origin}{where}={node!r} is an unresolved interpolation: trainlab stores resolved "
            "configs, so this file was not written by trainlab; it is not loaded."
        )


def check_targets(
    tree: Any, where: str = "", trusted: Iterable[str] | str | None = None, origin: str = ""
) -> None:
    """Refuse a plain config tree (a checkpoint's hyperparameters) that names any `_target_`
    outside the allow-list, with a ConfigError naming its key path and target.

    Every written name is checked before anything is imported; then each is resolved (importing
    trusted packages only) and checked again as the object it is. `origin` prefixes messages
    (e.g. the checkpoint's file).
    """
    rules = trusted_rules(trusted)
    found = list(_targets(tree, where, origin))
    for key, name in found:
        _check_name(name, key, rules, origin)
    for key, name in found:
        _resolve(name, key, rules, origin)
