"""Evaluate a checkpoint: `python -m trainlab.eval ckpt_path=<path>`.

The network and data configs are restored from the checkpoint (its hyperparameters), so the
training overrides need not be repeated; `data.<key>=...` replaces one data setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from trainlab import CONFIG_DIR

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from trainlab.data.datamodule import ImageDataModule

SPLITS = ("test", "val")


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
    """Test (or validate, `split=val`) the checkpoint `ckpt_path`; return the summary written to
    `summary.json`. Around it, the same lifecycle as a training run (trainlab.run.lifecycle)."""
    from hydra.utils import instantiate

    from trainlab.stack import import_training_stack

    import_training_stack(cfg)
    from trainlab.run.lifecycle import run_lifecycle
    from trainlab.utils.config import ConfigError, plain, require_values

    with run_lifecycle(cfg) as run:
        require_values(cfg)
        if cfg.split not in SPLITS:
            raise ConfigError(f"split={cfg.split!r} is not one of {list(SPLITS)}.")
        run.begin(None)
        data_overrides = {k: v for k, v in (plain(cfg.get("data")) or {}).items() if v is not None}
        model, datamodule = load_checkpoint(cfg.ckpt_path, data_overrides, plain(cfg.get("trusted_targets")))
        run.record["checkpoint"] = str(Path(cfg.ckpt_path).resolve())
        loggers = run.track_loggers([instantiate(c) for c in (cfg.get("logger") or {}).values() if c])
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and c.get("_target_")]
        trainer = run.track(instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks))
        evaluate_split = trainer.test if cfg.split == "test" else trainer.validate
        evaluate_split(model, datamodule=datamodule)
    return run.record


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console entry point; exit codes as `trainlab.train`'s (trainlab.run.stop)."""
    from trainlab.run.stop import exit_on_ctrl_c, stop_on_sigterm

    stop_on_sigterm()
    with exit_on_ctrl_c():
        _hydra_main()


if __name__ == "__main__":
    main()
