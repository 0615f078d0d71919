"""Experiment trackers: W&B offline unless the user is logged in; run ids kept for resuming."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import wandb as lightning_wandb
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from trainlab.utils import internet
from trainlab.utils.config import ConfigError
from trainlab.utils.internet import host_reachable
from trainlab.utils.overrides import command_line

log = logging.getLogger(__name__)


DEFAULT_WANDB_URL = "https://api.wandb.ai"


def wandb_logged_in() -> bool:
    """True when W&B can upload: WANDB_MODE=online, an API key in the environment or ~/.netrc,
    and the W&B host (WANDB_BASE_URL) answering within a few seconds.

    WANDB_MODE=offline/disabled wins over a stored key; no key means offline, never a prompt.
    A key with no network means offline with a warning: W&B itself would retry for about two
    minutes and then stop the run.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return False
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_URL)
    if not (mode == "online" or os.environ.get("WANDB_API_KEY") or _netrc_has_key(url)):
        return False
    if not host_reachable(url):
        log.warning(
            f"W&B: logged in, but {url} does not answer within {internet.PROBE_TIMEOUT_S:g} s: logging "
            "offline instead (upload later with `wandb sync <run dir>/wandb/offline-run-*`)."
        )
        return False
    return True


def _netrc_has_key(url: str) -> bool:
    try:
        return netrc.netrc().authenticators(urlparse(url).hostname) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


# whether a W&B run of this process has recorded the installed packages (save_requirements=once)
_requirements_saved = False


def wandb_logger(
    offline: bool | None = None,
    console: str = "auto",
    system_stats: bool = True,
    stats_interval_s: float = 15.0,
    args: list[str] | None = None,
    log_model: bool | Literal["all"] = False,
    save_requirements: bool | Literal["once"] = "once",
    **kwargs,
) -> WandbLogger:
    """trainlab's WandbLogger; `offline=None` picks offline unless `wandb_logged_in()`.

    console: W&B's capture of the terminal output (`auto`, `wrap`, `redirect` or `off`).
    system_stats: sample CPU/GPU/memory use every `stats_interval_s` seconds in W&B's own
    process; on a small CPU machine that process competes with training (BENCHMARKS.md).
    args: the run's command-line arguments as W&B records them (its "Command"); given, the
    W&B run starts here, so that it records these; None: it starts when first used, and
    records the process's own.
    log_model: the best and last checkpoints as W&B artifacts (see `WandbLogger`).
    save_requirements: the installed Python packages as the run's requirements.txt (W&B lists
    them at every run start: 70 ms, a tenth of a small study job). "once": the first W&B run of
    this process records them; the later jobs of a multirun, which run in the same process and so
    with the same packages, do not. true: every run; false: none.
    """
    import wandb

    from trainlab.utils import library_patches

    global _requirements_saved
    if log_model not in (False, True, "all"):
        raise ConfigError(f"logger.wandb.log_model={log_model!r}: choose false, true or all.")
    if save_requirements not in (False, True, "once"):
        raise ConfigError(
            f"logger.wandb.save_requirements={save_requirements!r}: choose true, false or once (the "
            "first W&B run of the process)."
        )
    if offline is None:
        offline = not wandb_logged_in()
    # the run may start later, when first used: the patch stays for the process (`trainlab.train`
    # restores it when its runs are over)
    library_patches.apply("wandb_launch_inputs")
    optional = {}
    if "x_save_requirements" in wandb.Settings.model_fields:  # a private setting of wandb 0.2x-0.31
        saves = save_requirements is True or (save_requirements == "once" and not _requirements_saved)
        optional["x_save_requirements"] = saves
        _requirements_saved = _requirements_saved or saves
    settings = wandb.Settings(
        console=console,
        x_disable_stats=not system_stats,
        x_stats_sampling_interval=stats_interval_s,
        **optional,
    )
    if offline and "WANDB_SILENT" not in os.environ:
        # offline, W&B's banners (sync mode, `wandb leet`, the history sparklines) only repeat
        # what the run's last lines say: where its files are and how to upload them
        settings.silent = True
    logger = WandbLogger(offline=offline, settings=settings, log_model=log_model, **kwargs)
    if args is not None:
        # wandb 0.31 records a run's arguments from sys.argv when it starts (Settings._args, a
        # computed field: neither a setting nor WANDB_ARGS changes it), and a multirun job's
        # sys.argv is the whole sweep's command line
        with command_line(args):
            logger.experiment  # noqa: B018  (starts the run; a no-op on ranks other than 0)
    return logger


def summarise_best(logger: WandbLogger, best: Mapping[str, str]) -> None:
    """W&B's summary of each metric in `best` ({"val/acc": "max"}): its best and its last value
    (`val/acc.max`, `val/acc.last`), not only the last one W&B keeps by default. The step axis
    stays Lightning's (`trainer/global_step`, which Lightning sets for every metric with "*")."""
    for metric, mode in best.items():
        logger.experiment.define_metric(
            metric, step_metric="trainer/global_step", step_sync=True, summary=f"{mode},last"
        )


class WandbLogger(lightning_wandb.WandbLogger):
    """Lightning's WandbLogger, whose checkpoint artifacts also work offline and say which
    checkpoint they hold, and which sends the metrics of one step to W&B in one call.

    One step's metrics arrive in several `log_metrics` calls: on a logging step the module's loss
    (Lightning), `train/images_per_sec` (trainlab.callbacks.throughput) and, for an earlier step,
    a layer-statistics sample; at an epoch's end the training and the validation metrics
    (Lightning) and the learning rate (LearningRateMonitor, at the next epoch's start, at the step
    after). Each `wandb.log` costs ~0.6 ms of the training process (a message to W&B's service),
    as much as a whole training step of a small network. So the metrics are kept by step until a
    call for a later step than all of them comes, and then sent in the order of their steps, each
    step's in one call: one row of W&B's history per step, as the dashboard shows them anyway (on
    the step axis `trainer/global_step`). What is kept is sent by `flush()`: when the fit or the
    test ends (`finalize`, also after a failure) and before the run is closed
    (trainlab.tracking.finish).
    """

    def __init__(self, *args: Any, log_model: bool | Literal["all"] = False, **kwargs: Any) -> None:
        super().__init__(*args, log_model=False, **kwargs)  # Lightning's scan is replaced below
        self._artifact_mode = log_model
        self._latest: dict[str, float] = {}  # the last logged value of every metric
        self._checkpoints: dict[str, dict[str, Any]] = {}  # path -> metadata, when it was written
        self._checkpoint_callbacks_seen: dict[int, ModelCheckpoint] = {}
        self._artifact_logged: dict[str, float] = {}  # path -> mtime of the version logged
        self._pending: dict[int, dict[str, Any]] = {}  # step -> its metrics not sent yet

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if step is None or (self._pending and step > max(self._pending)):
            self.flush()
        if step is None:  # no step to gather by: sent at once
            super().log_metrics(metrics, step)
        else:
            self._pending.setdefault(step, {}).update(metrics)
        self._latest.update({k: float(v) for k, v in metrics.items() if _is_number(v)})

    @rank_zero_only
    def flush(self) -> None:
        """Send the metrics kept so far, a call per step in the order of the steps (see the class's
        docstring)."""
        pending, self._pending = self._pending, {}
        for step in sorted(pending):
            super().log_metrics(pending[step], step)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if not self._artifact_mode:
            return
        self._checkpoint_callbacks_seen[id(checkpoint_callback)] = checkpoint_callback
        for role, path in _checkpoint_roles(checkpoint_callback):
            if self._checkpoints.get(path, {}).get("mtime") != Path(path).stat().st_mtime:
                self._checkpoints[path] = self._describe(role, path, checkpoint_callback)
        if self._artifact_mode == "all":
            self._log_checkpoint_artifacts()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()
        if status == "success" and self._artifact_mode and self._experiment is not None:
            self._log_checkpoint_artifacts()

    def _describe(self, role: str, path: str, callback: ModelCheckpoint) -> dict[str, Any]:
        """What an artifact says about the checkpoint at `path`, read right after it was written:
        step and epoch from the file, the monitored value from the callback (best) or the last
        value logged before the save (last)."""
        import torch

        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        metadata: dict[str, Any] = {
            "checkpoint": role,
            "step": int(state.get("global_step", 0)),
            "epoch": int(state.get("epoch", 0)),
            "filename": Path(path).name,
            "mtime": Path(path).stat().st_mtime,
        }
        monitor = callback.monitor or _monitor_of_best(self._checkpoints)
        if monitor:
            score = callback.best_model_score if role == "best" else self._latest.get(monitor)
            metadata.update(monitor=monitor, **{monitor: float(score) if score is not None else None})
        return metadata

    def _log_checkpoint_artifacts(self) -> None:
        import wandb

        # only the files that are best or last now: a top-k file that was best once is not
        current = {
            path for cb in self._checkpoint_callbacks_seen.values() for _, path in _checkpoint_roles(cb)
        }
        for path, metadata in self._checkpoints.items():
            if path not in current or self._artifact_logged.get(path) == metadata["mtime"]:
                continue
            name = self._checkpoint_name or f"model-{self.experiment.id}"
            artifact = wandb.Artifact(
                name=name, type="model", metadata={k: v for k, v in metadata.items() if k != "mtime"}
            )
            artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            self.experiment.log_artifact(artifact, aliases=[metadata["checkpoint"]])
            self._artifact_logged[path] = metadata["mtime"]


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)


def _checkpoint_roles(callback: ModelCheckpoint) -> list[tuple[str, str]]:
    """(`best` or `last`, path) of the files a ModelCheckpoint keeps: its monitored best, its
    last.ckpt (save_last), or, for a callback without a monitor, the file it rewrites."""
    roles = []
    if callback.monitor and callback.best_model_path:
        roles.append(("best", callback.best_model_path))
    last = callback.last_model_path or ("" if callback.monitor else callback.best_model_path)
    if last:
        roles.append(("last", last))
    return [(role, path) for role, path in roles if Path(path).is_file()]


def _monitor_of_best(checkpoints: dict[str, dict[str, Any]]) -> str | None:
    return next((m["monitor"] for m in checkpoints.values() if m.get("monitor")), None)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but one that appends to an existing metrics.csv and keeps its columns.

    Lightning's writer deletes the metrics.csv it finds when it starts (a resumed run would lose
    the rows of the epochs before the checkpoint), and starts with no known columns: when it
    appends to a file written earlier (a resumed run, or a test stage run in a process other than
    the fit's, as with ddp_spawn), it rewrites the file with only its own columns and fails on the
    old rows. Starting from the existing header keeps every column.
    """

    def _check_log_dir_exists(self) -> None:
        """Lightning's check warns and deletes the existing metrics.csv; keep it to append to."""

    def save(self) -> None:
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = set(next(csv.reader(file), []))
            known = header | set(self.metrics_keys) | set().union(*self.metrics)
            self.metrics_keys = sorted(known)
            if header != known:  # the file lacks a column: rewrite it once with all of them
                self._rewrite_with_new_header(self.metrics_keys)
        super().save()


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` whose metrics.csv survives resuming and multi-process stages."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_run_id(run_directory: Path) -> str:
    """The run id in the name of a W&B run directory: `[offline-]run-<time>-<id>`, and
    `...-<id>-1` when a resumed run started in the same second as the one before."""
    return Path(run_directory).name.split("run-", 1)[1].split("-")[1]


def find_wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run stored under `<run_dir>/wandb`."""
    runs = sorted((Path(run_dir) / "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
    runs = [p for p in runs if p.is_dir()]
    return wandb_run_id(runs[-1]) if runs else None
