"""Train one configuration: `python -m trainlab.train [overrides]` (add `-m` for a multirun).

Composes the config, builds data -> network (model x norm x activation) -> init -> transfer
policy -> callbacks, loggers -> Trainer, then fits, tests the best checkpoint and writes
`summary.json` in the run directory, also when the run fails, diverges or is interrupted.
Inside a multirun a failed job is recorded and the sweep goes on; the multirun's exit code
says whether any job failed (see trainlab.report.hydra_callback).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from trainlab.utils.summary import RunSummary

# Only Hydra is imported at module level: `--help` and `--cfg job` need no torch or Lightning
# (see scripts/bench/startup.py); the training stack is imported when a run starts.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; return the summary written to `summary.json`."""
    from trainlab.utils.summary import RunSummary, find_completed_run
    from trainlab.utils.tracking import finish_loggers, hydra_overrides, in_multirun, run_dir

    output_dir = run_dir(cfg)
    summary = RunSummary(output_dir, cfg.get("seed"), hydra_overrides())
    if cfg.get("skip_completed"):
        previous = find_completed_run(Path(cfg.paths.log_dir) / cfg.task_name, summary.data["overrides"])
        if previous is not None:
            log.info(
                f"skip_completed: these overrides already completed in {previous.parent}; not training again."
            )
            return summary.copy_completed(previous)
    loggers: list = []
    try:
        with summary.record():
            _fit_and_test(cfg, output_dir, summary, loggers)
    except Exception:
        if not in_multirun():
            raise
        # A failed job must not end the sweep: it is recorded, and the next job starts.
        log.exception(f"Job failed; recorded in {output_dir / 'summary.json'}. The multirun goes on.")
    finally:
        finish_loggers(loggers, summary.data["status"])
    log.info(f"Run {summary.data['status']}. Results: {output_dir} (summary.json, checkpoints/, csv/)")
    return summary.data


def _fit_and_test(cfg: DictConfig, output_dir: Path, summary: RunSummary, loggers: list) -> None:
    import lightning.pytorch as pl

    from trainlab import builders
    from trainlab.callbacks.divergence import DivergenceGuard
    from trainlab.utils.config import require_values
    from trainlab.utils.printing import print_config_tree
    from trainlab.utils.resources import cheap_cuda_checks_without_gpus, configure_threads
    from trainlab.utils.summary import DIVERGED

    require_values(cfg)
    builders.check_config(cfg)
    configure_threads(cfg.get("num_threads"))
    cheap_cuda_checks_without_gpus()
    summary.data["seed"] = pl.seed_everything(cfg.get("seed"), workers=True)
    print_config_tree(cfg, save_to=output_dir / "config_tree.log")
    checkpoint = builders.resolve_checkpoint(cfg, output_dir)

    datamodule = builders.build_datamodule(cfg)
    model = builders.build_model(cfg, datamodule)
    loggers.extend(builders.build_loggers(cfg, resume_from=checkpoint))
    init_stats = getattr(model.net, "init_stats", None)  # e.g. LSUV's per-layer variances
    if init_stats:
        summary.data["init_stats"] = init_stats
        for logger in loggers:
            logger.log_metrics({f"init/{k}": v for k, v in init_stats.items()}, step=0)
    callbacks = builders.build_callbacks(cfg, has_logger=bool(loggers))
    trainer = builders.build_trainer(cfg, callbacks, loggers)
    summary.track(trainer)

    # weights_only=True: never unpickle code from a checkpoint (torch's default can be overridden
    # by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, an explicit True cannot)
    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    summary.add_metrics(trainer.callback_metrics)
    for key, attribute in (("pretrained", "pretrained_report"), ("transfer", "transfer_counts")):
        if getattr(model, attribute, None):  # what was loaded, what was frozen (trainlab.transfer)
            summary.data[key] = getattr(model, attribute)
    if trainer.global_step == 0:  # fit ran in spawned workers (ddp_spawn): read the progress back
        _progress_from_last_checkpoint(trainer, summary)
    guard = next((c for c in trainer.callbacks if isinstance(c, DivergenceGuard)), None)
    if guard is not None and guard.diverged_at_step is not None:
        summary.data.update(status=DIVERGED, error=guard.reason, diverged_at_step=guard.diverged_at_step)
        log.warning(f"Run diverged: {guard.reason}.")
        return
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        summary.data["best_checkpoint"] = best
    if cfg.get("test") and not trainer.interrupted:
        trainer.test(model, datamodule=datamodule, ckpt_path="best" if best else None, weights_only=True)


def _progress_from_last_checkpoint(trainer: pl.Trainer, summary: RunSummary) -> None:
    import torch

    callback = trainer.checkpoint_callback
    last = Path(callback.dirpath) / "last.ckpt" if callback is not None and callback.dirpath else None
    if last is not None and last.is_file():
        state = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
        summary.data.update(global_step=int(state["global_step"]), epochs=int(state["epoch"]) + 1)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    metric = cfg.get("optimized_metric")  # what a hyperparameter sweeper (hparams_search) optimises
    if not metric:
        return None
    value = summary["metrics"].get(metric)
    return math.nan if value is None else value  # NaN: the sweeper records a failed trial


def main() -> None:
    """Console entry point; exits 1 if any job of a multirun failed or diverged."""
    from trainlab.report import hydra_callback

    _hydra_main()
    if hydra_callback.FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    main()
