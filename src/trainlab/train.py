"""Train one configuration: `python -m trainlab.train [overrides]` (add `-m` for a multirun).

Composes the config, builds data -> network (model x norm x activation) -> init -> transfer
policy -> callbacks, loggers -> Trainer, then fits and tests the best checkpoint. Everything
around that (summary.json, skip_completed, the run directory's lock, failure isolation inside a
multirun, Ctrl-C and SIGTERM, DDP workers, closing the loggers) is the run's lifecycle,
trainlab.run.lifecycle. Exit codes: 0 done, 1 failed (a multirun: any job failed), 130 Ctrl-C,
143 SIGTERM (trainlab.run.stop).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from trainlab import CONFIG_DIR
from trainlab.stack import import_training_stack

# Only Hydra is imported at module level: `--help` and `--cfg job` need no torch or Lightning
# (see scripts/bench/startup.py); the training stack is imported when a run starts.


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; return the summary written to `summary.json`.

    Ctrl-C or SIGTERM ends the run as `interrupted` with its last.ckpt saved, and is raised on
    (KeyboardInterrupt, SystemExit(143)): in a multirun no further job starts.
    """
    import_training_stack(cfg)
    from trainlab import builders, checks
    from trainlab.run.lifecycle import run_lifecycle
    from trainlab.utils.config import require_values

    with run_lifecycle(cfg) as run:
        if run.skipped:  # skip_completed: this run completed before
            return run.record
        require_values(cfg)
        checks.check_config(cfg)
        checkpoint = run.begin(builders.resolve_checkpoint(cfg, run.output_dir))

        datamodule = builders.build_datamodule(cfg)
        model, built = builders.build_model(cfg, datamodule, resume_from=checkpoint)  # checked against it
        run.record_built(built, datamodule.num_classes)
        loggers = run.track_loggers(builders.build_loggers(cfg, resume_from=checkpoint))
        callbacks = [*builders.build_callbacks(cfg, has_logger=bool(loggers)), run.heartbeat()]
        trainer = run.track(builders.build_trainer(cfg, callbacks, loggers))

        # weights_only=True: never unpickle code from a checkpoint (torch's default can be overridden
        # by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, an explicit True cannot)
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        if run.fit_ended(trainer) and cfg.get("test"):
            tested = run.checkpoint_to_test(trainer)  # the best, or a callback's own (SWA's average)
            trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
    return run.record


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    metric = cfg.get("optimized_metric")  # what a hyperparameter sweeper (hparams_search) optimises
    if not metric:
        return None
    value = summary["metrics"].get(metric)
    return math.nan if value is None else value  # NaN: the sweeper records a failed trial


def main() -> None:
    """Console entry point; its exit codes are trainlab.run.stop's: 1 if the run failed or any
    job of a multirun failed or diverged (the multirun's report callback,
    trainlab.report.hydra_callback, says so when the sweep ends), 130 after Ctrl-C, 143 after SIGTERM."""
    from trainlab.run.stop import exit_on_ctrl_c, stop_on_sigterm
    from trainlab.utils import library_patches
    from trainlab.utils.user_configs import exit_on_bad_command_line

    stop_on_sigterm()
    exit_on_bad_command_line(sys.argv[1:])  # the user's config files, task_name: before Hydra
    with exit_on_ctrl_c(), library_patches.applied():  # the libraries as they ship after the multirun
        _hydra_main()


if __name__ == "__main__":
    main()
