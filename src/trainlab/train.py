"""Train one configuration: `python -m trainlab.train [overrides]` (add `-m` for a multirun).

Composes the config, builds data -> network (model x norm x activation) -> init -> transfer
policy -> callbacks, loggers -> Trainer, then fits, tests the best checkpoint and writes
`summary.json` in the run directory, also when the run fails or is interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from trainlab import builders
from trainlab.utils.config import require_values
from trainlab.utils.printing import print_config_tree
from trainlab.utils.summary import RunSummary
from trainlab.utils.tracking import finish_loggers, hydra_overrides, run_dir

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; return the summary written to `summary.json`."""
    output_dir = run_dir(cfg)
    summary = RunSummary(output_dir, cfg.get("seed"), hydra_overrides())
    loggers: list = []
    try:
        with summary.record():
            require_values(cfg)
            builders.check_config(cfg)
            summary.data["seed"] = pl.seed_everything(cfg.get("seed"), workers=True)
            print_config_tree(cfg, save_to=output_dir / "config_tree.log")
            checkpoint = builders.resolve_checkpoint(cfg, output_dir)

            datamodule = builders.build_datamodule(cfg)
            model = builders.build_model(cfg, datamodule)
            loggers = builders.build_loggers(cfg, resume_from=checkpoint)
            init_stats = getattr(model.net, "init_stats", None)  # e.g. LSUV's per-layer variances
            if init_stats:
                summary.data["init_stats"] = init_stats
                for logger in loggers:
                    logger.log_metrics({f"init/{k}": v for k, v in init_stats.items()}, step=0)
            callbacks = builders.build_callbacks(cfg, has_logger=bool(loggers))
            trainer = builders.build_trainer(cfg, callbacks, loggers)
            summary.track(trainer)

            trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint)
            summary.add_metrics(trainer.callback_metrics)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best:
                summary.data["best_checkpoint"] = best
            if cfg.get("test") and not trainer.interrupted:
                trainer.test(model, datamodule=datamodule, ckpt_path="best" if best else None)
    finally:
        finish_loggers(loggers, summary.data["status"])
    log.info(
        f"Run finished ({summary.data['status']}). Results: {output_dir} (summary.json, checkpoints/, csv/)"
    )
    return summary.data


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    metric = cfg.get("optimized_metric")  # for hyperparameter sweepers (hparams_search)
    return summary["metrics"].get(metric) if metric else None


if __name__ == "__main__":
    main()
