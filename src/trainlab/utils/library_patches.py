"""Which library patches a process applies: `TRAINLAB_LIBRARY_PATCHES`."""

from __future__ import annotations

import os

NAMES = ("hydra_config_files", "hydra_sweep_configs", "wandb_launch_inputs")
SETTING = "TRAINLAB_LIBRARY_PATCHES"


def enabled(name: str) -> bool:
    value = os.environ.get(SETTING, "1").strip().lower()
    if value in ("1", "true", "on", "all"):
        return True
    if value in ("0", "false", "off", "none", ""):
        return False
    return name in {part.strip() for part in value.split(",")}
