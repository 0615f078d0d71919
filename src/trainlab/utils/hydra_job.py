"""What Hydra says about the job in progress: its directory, whether it is one job of a multirun,
and the overrides it was launched with."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def run_dir(cfg: DictConfig) -> Path:
    """This run's directory: `paths.output_dir` (Hydra's output dir unless overridden)."""
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
