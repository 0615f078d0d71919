"""Evaluate a checkpoint: `python -m trainlab.eval ckpt_path=<path>`.

The network and data configs are restored from the checkpoint (its hyperparameters), so the
training overrides need not be repeated; `data.<key>=...` replaces one data setting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from trainlab import CONFIG_DIR

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from trainlab.data.datamodule import ImageDataModule

SPLITS = ("test", "val")
log = logging.getLogger(__name__)


def load_checkpoint(
    path: str | Path, data_overrides: dict | None = None, trusted_targets: list[str] | None = None
) -> tuple[pl.LightningModule, ImageDataModule]:
    """The module (the Classifier or a study's own, see `module`) and DataModule of the run that
    wrote `path`, as that run configured them.

    A checkpoint is data, never code: it is loaded with torch.load(weights_only=True), and its
    module class and every `_target_` it stores are checked against trainlab's allow-list (plus
    `trusted_targets`, packages of your own) before anything is imported or built
    (trainlab.checkpoints.trusted_targets)."""
    from trainlab.data.datamodule import ImageDataModule
    from trainlab.models.rebuildable import module_class

    path = Path(path).expanduser()
    model = module_class(path, trusted_targets).load_from_checkpoint(
        path, map_location="cpu", trusted_targets=trusted_targets
    )
    datamodule = ImageDataModule.load_from_checkpoint(
        path, map_location="cpu", trusted_targets=trusted_targets, **(data_overrides or {})
    )
    return model, datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    from trainlab.run.console import quiet_library_output
    from trainlab.run.summary import RunSummary
    from trainlab.tracking.finish import finish_loggers
    from trainlab.utils.config import ConfigError, plain, require_values
    from trainlab.utils.hydra_job import hydra_overrides, run_dir

    quiet_library_output()
    output_dir = run_dir(cfg)
    summary = RunSummary(output_dir, cfg.get("seed"), hydra_overrides())
    loggers: list = []
    try:
        with summary.record():
            require_values(cfg)
            if cfg.split not in SPLITS:
                raise ConfigError(f"split={cfg.split!r} is not one of {list(SPLITS)}.")
            summary.data["seed"] = pl.seed_everything(cfg.get("seed"), workers=True)
            data_overrides = {k: v for k, v in (plain(cfg.get("data")) or {}).items() if v is not None}
            trusted = plain(cfg.get("trusted_targets"))
            model, datamodule = load_checkpoint(cfg.ckpt_path, data_overrides, trusted)
            summary.data["checkpoint"] = str(Path(cfg.ckpt_path).resolve())
            loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
            callbacks = [
                instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and c.get("_target_")
            ]
            trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
            summary.track(trainer)
            run = trainer.test if cfg.split == "test" else trainer.validate
            run(model, datamodule=datamodule)
    finally:
        finish_loggers(loggers, summary.data["status"], summary.succeeded)
    log.info(f"Evaluation {summary.data['status']}: {summary.data['metrics']} -> {output_dir}/summary.json")
    return summary.data


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
