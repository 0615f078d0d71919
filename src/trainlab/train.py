"""Train one configuration: `python -m trainlab.train [overrides]` (add `-m` for a multirun).

Composes the config, builds data -> network (model x norm x activation) -> init -> transfer
policy -> callbacks, loggers -> Trainer, then fits, tests the best checkpoint and writes
`summary.json` in the run directory, also when the run fails, diverges or is interrupted.
Inside a multirun a failed job is recorded and the sweep goes on; when the sweep ends,
trainlab.report.hydra_callback sets the exit code: 1 if any job failed. Ctrl-C and SIGTERM
end the run (and a multirun) with a checkpoint to resume from and a non-zero exit code.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from trainlab import CONFIG_DIR

if TYPE_CHECKING:
    from trainlab.run.summary import EarlierRuns, RunSummary

# Only Hydra is imported at module level: `--help` and `--cfg job` need no torch or Lightning
# (see scripts/bench/startup.py); the training stack is imported when a run starts.
log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; return the summary written to `summary.json`.

    Ctrl-C or SIGTERM ends the run as `interrupted` with its last.ckpt saved and is raised on
    (SIGTERM as SystemExit(143)): in a multirun no further job starts, and the study report of
    what ran is written on the way out.
    """
    from trainlab.run.garbage_collection import imports_spared_from_garbage_collection

    with imports_spared_from_garbage_collection():  # the training stack, once per process
        from lightning.pytorch.utilities import rank_zero_only

        from trainlab import builders  # noqa: F401  (the data pipelines: Albumentations, scikit-learn)
        from trainlab.run.console import end_of_run_lines, quiet_library_output
        from trainlab.run.ddp_workers import WorkersPerJob
        from trainlab.run.summary import RunSummary
        from trainlab.tracking.finish import finish_loggers
        from trainlab.tracking.wandb_service import start_wandb_service
        from trainlab.utils.hydra_job import hydra_overrides, in_multirun, run_dir

        # W&B's import, then its service process, started while the run gets ready
        start_wandb_service(cfg, rank_zero_only.rank)

    quiet_library_output()
    output_dir = run_dir(cfg)
    summary = RunSummary(output_dir, cfg.get("seed"), hydra_overrides())
    resume_from = None
    if cfg.get("skip_completed"):
        earlier = _earlier_runs(cfg, summary.data["overrides"], output_dir)
        if earlier.completed is not None:
            log.info(f"skip_completed: already completed in {earlier.completed.parent}; not training again.")
            return summary.copy_completed(earlier.completed)
        if earlier.resumable is not None and cfg.get("ckpt_path") is None:
            resume_from = earlier.resumable
            log.info(f"skip_completed: resuming the interrupted run from {resume_from}.")
    if rank_zero_only.rank == 0:
        summary.start(resumed_from=resume_from)  # replaces any earlier attempt's summary.json here
    elif resume_from is None:  # another process of a multi-device run: resume what rank 0 resumes
        resume_from = summary.resumed_by_rank_zero()
    loggers: list = []
    stopped: BaseException | None = None
    workers = WorkersPerJob()  # DDP in a multirun: this job's workers run this job only
    try:
        with summary.record():
            _fit_and_test(cfg, output_dir, summary, loggers, resume_from)
    except Exception:
        if not in_multirun():
            raise
        # A failed job must not end the sweep: it is recorded, and the next job starts.
        log.exception(f"Job failed; recorded in {output_dir / 'summary.json'}. The multirun goes on.")
    except BaseException as error:  # Ctrl-C, SIGTERM: this run ends, and so does a multirun
        stopped = error
    finally:
        workers.end(summary.trainer)
        finish_loggers(loggers, summary.data["status"], summary.succeeded)
    if rank_zero_only.rank == 0:  # one account of the run, not one per process of a multi-device run
        for line in end_of_run_lines(summary.data, output_dir):
            log.info(line)
    if stopped is not None:
        _stop(stopped)
    return summary.data


def _earlier_runs(cfg: DictConfig, overrides: list[str], output_dir: Path) -> EarlierRuns:
    """Where skip_completed looks: `logs/<task_name>/`, this run's own sweep (or run) directory,
    which a re-launch with the same `hydra.sweep.dir` shares, and a directory given as
    `skip_completed=<dir>`."""
    from hydra.core.hydra_config import HydraConfig

    from trainlab.run.summary import find_earlier_runs
    from trainlab.utils.hydra_job import in_multirun

    roots = [Path(cfg.paths.log_dir) / cfg.task_name]
    roots.append(Path(HydraConfig.get().sweep.dir) if in_multirun() else output_dir)
    if isinstance(cfg.skip_completed, str) and cfg.skip_completed.lower() != "true":
        roots.append(Path(cfg.skip_completed).expanduser())
    earlier = find_earlier_runs(roots, overrides)
    if earlier.completed is None and earlier.resumable is None:
        searched = ", ".join(str(r) for r in dict.fromkeys(roots))
        log.info(f"skip_completed: no earlier run with these overrides in {searched}; training.")
    return earlier


def _stop(error: BaseException) -> None:
    """End the process after an interrupt: the study report of a multirun, a non-zero exit."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from trainlab.report.hydra_callback import report_stopped_multirun

    report_stopped_multirun()
    if isinstance(error, SIGTERMException) and not error.code:  # Lightning's has no exit code
        raise SystemExit(128 + signal.SIGTERM) from error
    raise error


def _fit_and_test(
    cfg: DictConfig, output_dir: Path, summary: RunSummary, loggers: list, resume_from: Path | None
) -> None:
    import lightning.pytorch as pl

    from trainlab import builders, checks
    from trainlab.callbacks.weight_averaging import SWA
    from trainlab.run.resources import cheap_cuda_checks_without_gpus, configure_threads
    from trainlab.run.summary import DIVERGED, PRUNED
    from trainlab.utils.config import require_values
    from trainlab.utils.printing import print_config_tree

    require_values(cfg)
    checks.check_config(cfg)
    configure_threads(cfg.get("num_threads"))
    cheap_cuda_checks_without_gpus()
    summary.data["seed"] = pl.seed_everything(cfg.get("seed"), workers=True)
    print_config_tree(cfg, save_to=output_dir / "config_tree.log")
    checkpoint = resume_from or builders.resolve_checkpoint(cfg, output_dir)
    if checkpoint is not None:
        summary.data["resumed_from"] = str(checkpoint)

    datamodule = builders.build_datamodule(cfg)
    model, built = builders.build_model(cfg, datamodule)
    summary.data.update(built.summary_items())  # init_stats, pretrained
    summary.data["num_classes"] = datamodule.num_classes  # the report's chance level
    loggers.extend(builders.build_loggers(cfg, resume_from=checkpoint))
    if built.init:  # e.g. LSUV's per-layer variances
        for logger in loggers:
            logger.log_metrics({f"init/{k}": v for k, v in built.init.items()}, step=0)
    callbacks = [*builders.build_callbacks(cfg, has_logger=bool(loggers)), summary.heartbeat()]
    trainer = builders.build_trainer(cfg, callbacks, loggers)
    summary.track(trainer)

    # weights_only=True: never unpickle code from a checkpoint (torch's default can be overridden
    # by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, an explicit True cannot)
    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    summary.add_metrics(trainer.callback_metrics)
    if trainer.global_step == 0:  # fit ran in spawned workers (ddp_spawn): read its outcome back
        summary.read_last_checkpoint(trainer)
    summary.collect(trainer)  # what the callbacks offer, e.g. the divergence guard's outcome
    if summary.data["status"] == DIVERGED and trainer.is_global_zero:
        log.warning(f"Run diverged: {summary.data['error']}.")
    if summary.data["status"] in (DIVERGED, PRUNED):  # no test (PRUNED: a search stopped it early)
        return
    best = summary.record_best(trainer.checkpoint_callback)  # best_checkpoint, best_epoch, val/acc_best
    if cfg.get("test") and not trainer.interrupted:
        # test/* are the best checkpoint's; null: the weights at the end of training (no checkpoint)
        # SWA's average reaches the model only when fit ends: test its checkpoint, not the best raw one
        averaged = next(
            (str(c.saved_path) for c in trainer.callbacks if isinstance(c, SWA) and c.saved_path), None
        )
        summary.data["tested_checkpoint"] = averaged or best or None
        ckpt_path = averaged or ("best" if best else None)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    metric = cfg.get("optimized_metric")  # what a hyperparameter sweeper (hparams_search) optimises
    if not metric:
        return None
    value = summary["metrics"].get(metric)
    return math.nan if value is None else value  # NaN: the sweeper records a failed trial


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside a trainer's fit or test (building data, between jobs): stop right away.

    During fit and test Lightning's own handler runs first and calls this one too: the
    trainer then stops at the next step boundary instead, with a checkpoint (InterruptCheckpoint).
    """
    if signal.getsignal(signal.SIGTERM) is not _raise_on_sigterm:
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    raise SIGTERMException(128 + signum)


def main() -> None:
    """Console entry point; exits 1 if any job of a multirun failed or diverged (the multirun's
    report callback, trainlab.report.hydra_callback, says so when the sweep ends), non-zero when
    stopped by Ctrl-C or SIGTERM (143)."""
    from trainlab.utils.config_files import read_config_files_once
    from trainlab.utils.sweep_configs import compose_each_job_once
    from trainlab.utils.user_configs import exit_on_bad_command_line

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    exit_on_bad_command_line(sys.argv[1:])  # the user's config files, task_name: before Hydra
    compose_each_job_once()
    read_config_files_once()
    try:
        _hydra_main()
    except BaseException as error:
        if _is_stop(error):
            # Ctrl-C or SIGTERM between two jobs of a multirun (Hydra composing or saving the
            # next job's config) reached no job's `_stop`: report the jobs so far (once; a no-op
            # when the stopped job has reported them)
            from trainlab.report.hydra_callback import report_stopped_multirun

            report_stopped_multirun()
        raise


def _is_stop(error: BaseException) -> bool:
    """Ctrl-C, or SIGTERM (Lightning's SIGTERMException, which `_raise_on_sigterm` raises too;
    without Lightning imported, no SIGTERM was turned into one)."""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return isinstance(error, KeyboardInterrupt) or (
        exceptions is not None and isinstance(error, exceptions.SIGTERMException)
    )


if __name__ == "__main__":
    main()
