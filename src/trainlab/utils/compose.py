"""The config a command line would get, composed in-process (tests, benchmarks, notebooks).

`compose_run_config(["model=mlp"], Path("runs/x"))` is what `python -m trainlab.train model=mlp`
would see, with its run directory at runs/x, and Hydra's runtime set up so that
`trainlab.train.train(cfg)` runs as under the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from trainlab import CONFIG_DIR
from trainlab.utils.user_configs import check_command_line


def compose_run_config(
    overrides: Sequence[str],
    output_dir: str | Path,
    config_name: str = "train",
    log_dir: str | Path | None = None,
) -> DictConfig:
    """Compose `config_name` with `overrides`; the run directory is `output_dir`, logs under
    `log_dir` (default: its parent)."""
    output_dir = Path(output_dir)
    check_command_line(overrides)  # a user config file that does not parse, a task_name leaving logs/
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.paths.log_dir = str(log_dir or output_dir.parent)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
