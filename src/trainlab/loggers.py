"""Experiment trackers: W&B offline unless the user is logged in; run ids kept for resuming."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """True when W&B can upload: WANDB_MODE=online, an API key in the environment or ~/.netrc.

    WANDB_MODE=offline/disabled wins over a stored key; no key means offline, never a prompt.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return False
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs) -> WandbLogger:
    """Lightning's WandbLogger; `offline=None` picks offline unless `wandb_logged_in()`."""
    if offline is None:
        offline = not wandb_logged_in()
    return WandbLogger(offline=offline, **kwargs)


def find_wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run stored under `<run_dir>/wandb` (dirs `[offline-]run-<time>-<id>`)."""
    runs = sorted((Path(run_dir) / "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
    runs = [p for p in runs if p.is_dir()]
    return runs[-1].name.rsplit("-", 1)[1] if runs else None
