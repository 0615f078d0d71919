"""Optional parts of trainlab and the extra that installs each (pyproject.toml's
[project.optional-dependencies]): a missing one is named with the command that installs it."""

from __future__ import annotations

import importlib.util

from trainlab.utils.config import ConfigError

# importable module -> the extra that provides it
EXTRAS = {
    "optuna": "search",
    "optuna_dashboard": "search",
    "hydra_plugins.hydra_joblib_launcher": "launchers",
    "hydra_plugins.hydra_submitit_launcher": "launchers",
    "wandb_workspaces": "workspace",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require_extra(module: str, needed_for: str) -> None:
    """Raise a ConfigError saying what to install when `module` (one of EXTRAS) cannot be imported."""
    if not _installed(module):
        extra = EXTRAS[module]
        raise ConfigError(
            f"{needed_for} needs the `{module.split('.')[-1]}` package, which is not installed: "
            f"pip install 'trainlab[{extra}]' (or, in a clone, pip install -e '.[{extra}]')."
        )
