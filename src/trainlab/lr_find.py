"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates"): `python -m trainlab.lr_find [overrides]`.

Composes the study exactly as `trainlab.train` does (same config, same overrides), then runs
Lightning's `Tuner.lr_find`: `num_training` steps with the rate growing exponentially from
`min_lr` to `max_lr`, stopping early once the loss exceeds 4x its best. Leaves in the run
directory `lr_find.png` (loss against rate, log axis, the suggestion marked) and `lr_find.json`
(`suggestion`, `lr`, `loss`), and prints the override to train with, e.g. `optimizer.lr=0.0123`.
The suggestion is the rate where the loss falls fastest (Lightning's steepest-gradient rule).
Settings: `+lr_find.min_lr=1e-6 +lr_find.max_lr=1 +lr_find.num_training=100`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from trainlab import CONFIG_DIR
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)

DEFAULTS = {"min_lr": 1e-6, "max_lr": 1.0, "num_training": 100}
# Lightning's suggestion skips the first 10 rates and the last one, and takes the gradient of what
# is left, which needs two points (Tuner.lr_find -> _LRFinder.suggestion(skip_begin=10, skip_end=1))
MIN_STEPS = 13


def check_settings(given: Any) -> dict[str, Any]:
    """`lr_find.*` merged over DEFAULTS; unknown keys, rates that are not 0 < min_lr < max_lr and
    too few steps are refused (Lightning divides by num_training: 0 is a ZeroDivisionError)."""
    settings = {**DEFAULTS, **dict(given or {})}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"lr_find.{unknown[0]}: unknown setting; valid: {', '.join(DEFAULTS)}.")
    rates = [settings["min_lr"], settings["max_lr"]]
    if (
        not all(isinstance(r, int | float) and not isinstance(r, bool) for r in rates)
        or not 0 < rates[0] < rates[1]
    ):
        raise ConfigError(f"lr_find: need 0 < lr_find.min_lr < lr_find.max_lr, got {settings}.")
    steps = settings["num_training"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise ConfigError(
            f"lr_find.num_training={steps!r} must be an integer >= {MIN_STEPS}: the suggestion skips the "
            f"first 10 rates and the last one, and needs two more (the default is {DEFAULTS['num_training']})."
        )
    return settings


def lr_find(cfg: DictConfig) -> dict[str, Any]:
    """Run the range test on the composed study; write lr_find.{png,json}; return the json's data."""
    from trainlab.stack import import_training_stack

    import_training_stack(cfg)
    import lightning.pytorch as pl
    from lightning.pytorch.tuner import Tuner

    from trainlab import builders, checks
    from trainlab.transfer.policy import TransferPolicy
    from trainlab.utils.hydra_job import run_dir

    settings = check_settings(cfg.get("lr_find"))
    output_dir = run_dir(cfg)
    checks.check_config(cfg)
    pl.seed_everything(cfg.get("seed"), workers=True)
    datamodule = builders.build_datamodule(cfg)
    model, _ = builders.build_model(cfg, datamodule)
    # Only the transfer policy matters to the test (which parameters train); no checkpoints, no logs.
    callbacks = [c for c in builders.build_callbacks(cfg, has_logger=False) if isinstance(c, TransferPolicy)]
    trainer = builders.build_trainer(cfg, callbacks, loggers=[])
    finder = Tuner(trainer).lr_find(
        model, datamodule=datamodule, update_attr=True, attr_name="lr", **settings
    )
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None or not math.isfinite(suggestion):
        raise RuntimeError(
            "lr_find: too few finite losses to suggest a rate (the loss diverged at once, or fewer "
            "than 12 steps ran); lower lr_find.max_lr or raise lr_find.num_training."
        )
    result = {
        "suggestion": float(suggestion),
        **{k: [float(v) for v in finder.results[k]] for k in ("lr", "loss")},
    }
    result["override"] = f"optimizer.lr={suggestion:.4g}"
    (Path(output_dir) / "lr_find.json").write_text(json.dumps(result, indent=2))
    _plot(finder, Path(output_dir) / "lr_find.png")
    return result


def _plot(finder: Any, path: Path) -> None:
    # Lightning draws on our own Figure: no pyplot figure, so a notebook's backend stays as it was
    from matplotlib.figure import Figure

    figure = Figure()
    ax = figure.subplots()
    finder.plot(suggest=True, show=False, ax=ax)  # log x axis, the suggestion as a red dot
    ax.set_title(f"LR range test: suggested optimizer.lr={finder.suggestion():.4g}")
    figure.savefig(path, dpi=100, bbox_inches="tight")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    result = lr_find(cfg)
    print(f"Suggested learning rate: {result['suggestion']:.4g}; train with:\n  {result['override']}")


def main() -> None:
    """Console entry point `trainlab-lr-find`."""
    import sys

    from trainlab.utils.user_configs import exit_on_bad_command_line

    exit_on_bad_command_line(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
