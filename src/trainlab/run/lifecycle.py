"""A run's lifecycle around the entry point's compose, build, fit, test:

    with run_lifecycle(cfg) as run:
        if run.skipped:                       # skip_completed: completed before
            return run.record
        checkpoint = run.begin(ckpt_path)     # threads, seed, config tree; what to resume
        ...                                   # build data, model, loggers (run.track_loggers), trainer
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint)
        if run.fit_ended(trainer) and cfg.test:
            trainer.test(model, datamodule=datamodule, ckpt_path=run.checkpoint_to_test(trainer))
    return run.record

On the way in: the run directory's lock (one writer, run/lock.py); `skip_completed` (copy an
earlier completed run's record, or resume an interrupted one from its last.ckpt); summary.json
says `running` (beside a finished record, in `attempts/`, see run/summary.py); no linked file
and no orphaned temporary checkpoint in the directory (run/directory.py); DDP workers of this
job only (run/ddp_workers.py).

On the way out, whatever happened: summary.json gets the outcome, the DDP workers end and
Lightning's launcher is restored, the loggers are closed with the outcome, and the run's last
lines say its result and its files. Inside a multirun a failed job is logged and the sweep goes
on. Ctrl-C and SIGTERM are raised on, as KeyboardInterrupt and SystemExit(143), and the entry
points exit with 130 and 143 (run/stop.py); the report of a stopped multirun's jobs so far is the
report callback's business (trainlab.report.hydra_callback).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from trainlab.run.console import end_of_run_lines, quiet_library_output
from trainlab.run.ddp_workers import WorkersPerJob
from trainlab.run.directory import refuse_linked_files, remove_orphaned_temporaries
from trainlab.run.lock import RunDirectoryBusy, RunDirectoryLock
from trainlab.run.resources import cheap_cuda_checks_without_gpus, configure_threads
from trainlab.run.status import DIVERGED, FAILED, INTERRUPTED, PRUNED
from trainlab.run.stop import stop_exit
from trainlab.run.summary import EarlierRuns, RunSummary, find_earlier_runs
from trainlab.tracking.finish import finish_loggers
from trainlab.utils.hydra_job import hydra_overrides, in_multirun, run_dir
from trainlab.utils.printing import print_config_tree

log = logging.getLogger(__name__)


@runtime_checkable
class ChoosesTestedCheckpoint(Protocol):
    """A callback that changes which weights the run's test must see (e.g. SWA, whose average
    reaches the model only when fit ends, in a checkpoint of its own)."""

    def checkpoint_to_test(self, trainer: pl.Trainer) -> str | Path | None:
        """The checkpoint to test instead of the best one; None: no opinion (e.g. nothing saved)."""
        ...


class Run:
    """One run in progress: its directory, its record (`record`, what summary.json will say),
    and the steps between which the entry point builds, fits and tests."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        self.summary = RunSummary(output_dir, cfg.get("seed"), hydra_overrides())
        self.skipped = False  # nothing to train: completed before, or another process writes here
        self.resume_from: Path | None = None  # skip_completed's checkpoint of an interrupted run
        self.loggers: list = []  # closed when the run ends
        self._init_metrics: dict[str, float] = {}
        self._best = ""

    @property
    def record(self) -> dict[str, Any]:
        return self.summary.data

    def begin(self, checkpoint: Path | None) -> Path | None:
        """Threads, seed and config tree; return the checkpoint the fit resumes from:
        skip_completed's, else `checkpoint` (`ckpt_path`)."""
        configure_threads(self.cfg.get("num_threads"))
        cheap_cuda_checks_without_gpus()
        self.record["seed"] = pl.seed_everything(self.cfg.get("seed"), workers=True)
        if rank_zero_only.rank == 0:
            print_config_tree(self.cfg, save_to=self.summary.record_dir / "config_tree.log")
        checkpoint = self.resume_from or checkpoint
        if checkpoint is not None:
            self.record["resumed_from"] = str(checkpoint)
        return checkpoint

    def record_built(self, built: Any, num_classes: int) -> None:
        """What building the network did (`built.summary_items()`: init_stats, pretrained; its
        `init` metrics go to the loggers) and the number of classes (the report's chance level)."""
        self.record.update(built.summary_items())
        self.record["num_classes"] = num_classes
        self._init_metrics = {f"init/{k}": v for k, v in (built.init or {}).items()}

    def track_loggers(self, loggers: Sequence) -> list:
        """Close `loggers` when the run ends; give them the init scheme's metrics (LSUV's
        per-layer variances) at step 0."""
        self.loggers.extend(loggers)
        for logger in loggers if self._init_metrics else ():
            logger.log_metrics(self._init_metrics, step=0)
        return list(loggers)

    def heartbeat(self) -> pl.Callback:
        """The callback that refreshes summary.json at each training epoch end."""
        return self.summary.heartbeat()

    def track(self, trainer: pl.Trainer) -> pl.Trainer:
        """Read steps, epochs and metrics from `trainer` when the run ends."""
        self.summary.track(trainer)
        return trainer

    def fit_ended(self, trainer: pl.Trainer) -> bool:
        """Record what the fit left (metrics, what the callbacks offer, the best checkpoint);
        True when the run goes on to its test: it did not diverge, was not pruned or stopped."""
        self.summary.add_metrics(trainer.callback_metrics)
        if trainer.global_step == 0:  # fit ran in spawned workers (ddp_spawn): read its outcome back
            self.summary.read_last_checkpoint(trainer)
        self.summary.collect(trainer)  # e.g. the divergence guard's outcome
        status = self.record["status"]
        if status == DIVERGED and trainer.is_global_zero:
            log.warning(f"Run diverged: {self.record['error']}.")
        if status in (DIVERGED, PRUNED):  # no test (PRUNED: a search stopped it early)
            return False
        self._best = self.summary.record_best(trainer.checkpoint_callback)  # best_checkpoint, best_epoch
        return not trainer.interrupted

    def checkpoint_to_test(self, trainer: pl.Trainer) -> str | None:
        """`ckpt_path` for trainer.test: a callback's own (`ChoosesTestedCheckpoint`), else the
        best checkpoint, else None (the weights at the end of training). Recorded as
        `tested_checkpoint`."""
        chosen = next(
            (
                str(path)
                for callback in trainer.callbacks
                if isinstance(callback, ChoosesTestedCheckpoint)
                and (path := callback.checkpoint_to_test(trainer))
            ),
            None,
        )
        self.record["tested_checkpoint"] = chosen or self._best or None
        return chosen or ("best" if self._best else None)

    def look_for_earlier_runs(self) -> None:
        """skip_completed: an earlier completed run with these overrides is copied (`skipped`);
        an interrupted or killed one is resumed from its last.ckpt (unless `ckpt_path` is set)."""
        if not self.cfg.get("skip_completed"):
            return
        earlier = _earlier_runs(self.cfg, self.record["overrides"], self.output_dir)
        if earlier.completed is not None:
            log.info(f"skip_completed: already completed in {earlier.completed.parent}; not training again.")
            self.summary.copy_completed(earlier.completed, write=rank_zero_only.rank == 0)
            self.skipped = True
        elif earlier.resumable is not None and self.cfg.get("ckpt_path") is None:
            self.resume_from = earlier.resumable
            log.info(f"skip_completed: resuming the interrupted run from {self.resume_from}.")


@contextmanager
def run_lifecycle(cfg: DictConfig) -> Iterator[Run]:
    """The run's lifecycle around the block (see the module's docstring)."""
    quiet_library_output()
    run = Run(cfg, run_dir(cfg))
    rank_zero = rank_zero_only.rank == 0  # process 0 of a multi-process run keeps the record
    with ExitStack() as held:
        if rank_zero:
            _lock(run, held)
        if not run.skipped:
            run.look_for_earlier_runs()
        if run.skipped:
            yield run
            return
        if rank_zero:
            run.summary.start(resumed_from=run.resume_from)
        elif run.resume_from is None:  # another process of a multi-device run: resume what rank 0 resumes
            run.resume_from = run.summary.resumed_by_rank_zero()
        stopped: BaseException | None = None
        try:
            with WorkersPerJob() as workers:  # DDP in a multirun: this job's workers run this job only
                try:
                    with run.summary.record():
                        if rank_zero:
                            refuse_linked_files(run.output_dir)
                            remove_orphaned_temporaries(run.output_dir)
                        yield run
                finally:
                    workers.trainer = run.summary.trainer
        except Exception:
            if not in_multirun():
                raise
            # A failed job must not end the sweep: it is recorded, and the next job starts.
            log.exception(f"Job failed; recorded in {run.summary.path}. The multirun goes on.")
        except BaseException as error:  # Ctrl-C, SIGTERM: this run ends, and so does a multirun
            stopped = error
        finally:
            finish_loggers(run.loggers, run.record["status"], run.summary.succeeded)
    if rank_zero:  # one account of the run, not one per process of a multi-device run
        for line in end_of_run_lines(run.record, run.output_dir):
            log.info(line)
    if stopped is not None:
        exit_ = stop_exit(stopped, interrupted=run.record["status"] == INTERRUPTED)
        if exit_ is stopped:
            raise stopped
        raise exit_ from stopped


def _lock(run: Run, held: ExitStack) -> None:
    """Take the run directory's lock for the run's life. Another process writing there: an
    error; inside a multirun the job is logged as not run, and the sweep goes on."""
    try:
        held.enter_context(RunDirectoryLock(run.output_dir))
    except RunDirectoryBusy as busy:
        if not in_multirun():
            raise
        log.error(f"Job not run: {busy}")  # the directory's record is the other process's
        run.skipped = True
        run.record.update(status=FAILED, error=str(busy))


def _earlier_runs(cfg: DictConfig, overrides: list[str], output_dir: Path) -> EarlierRuns:
    """Where skip_completed looks: `logs/<task_name>/`, this run's own sweep (or run) directory,
    which a re-launch with the same `hydra.sweep.dir` shares, and a directory given as
    `skip_completed=<dir>`."""
    from hydra.core.hydra_config import HydraConfig

    roots = [Path(cfg.paths.log_dir) / cfg.task_name]
    roots.append(Path(HydraConfig.get().sweep.dir) if in_multirun() else output_dir)
    if isinstance(cfg.skip_completed, str) and cfg.skip_completed.lower() != "true":
        roots.append(Path(cfg.skip_completed).expanduser())
    earlier = find_earlier_runs(roots, overrides)
    if earlier.completed is None and earlier.resumable is None:
        searched = ", ".join(str(r) for r in dict.fromkeys(roots))
        log.info(f"skip_completed: no earlier run with these overrides in {searched}; training.")
    return earlier
