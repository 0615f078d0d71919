"""Experiment trackers: W&B offline unless the user is logged in; run ids kept for resuming."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from trainlab.utils import network
from trainlab.utils.network import host_reachable

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
            f"W&B: logged in, but {url} does not answer within {network.PROBE_TIMEOUT_S:g} s: logging "
            "offline instead (upload later with `wandb sync <run dir>/wandb/offline-run-*`)."
        )
        return False
    return True


def _netrc_has_key(url: str) -> bool:
    try:
        return netrc.netrc().authenticators(urlparse(url).hostname) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(
    offline: bool | None = None,
    console: str = "auto",
    system_stats: bool = True,
    stats_interval_s: float = 15.0,
    args: list[str] | None = None,
    **kwargs,
) -> WandbLogger:
    """Lightning's WandbLogger; `offline=None` picks offline unless `wandb_logged_in()`.

    console: W&B's capture of the terminal output (`auto`, `wrap`, `redirect` or `off`).
    system_stats: sample CPU/GPU/memory use every `stats_interval_s` seconds in W&B's own
    process; on a small CPU machine that process competes with training (BENCHMARKS.md).
    args: the run's command-line arguments as W&B records them (its "Command"); given, the
    W&B run starts here, so that it records these; None: it starts when first used, and
    records the process's own.
    """
    import wandb

    if offline is None:
        offline = not wandb_logged_in()
    settings = wandb.Settings(
        console=console, x_disable_stats=not system_stats, x_stats_sampling_interval=stats_interval_s
    )
    if offline and "WANDB_SILENT" not in os.environ:
        # offline, W&B's banners (sync mode, `wandb leet`, the history sparklines) only repeat
        # what the run's last lines say: where its files are and how to upload them
        settings.silent = True
    logger = WandbLogger(offline=offline, settings=settings, **kwargs)
    if args is not None:
        with _command_line(args):
            logger.experiment  # noqa: B018  (starts the run; a no-op on ranks other than 0)
    return logger


@contextmanager
def _command_line(args: list[str]) -> Iterator[None]:
    """`sys.argv[1:]` replaced by `args` for the block: wandb 0.31 records the arguments of a run
    from sys.argv when it starts (Settings._args, a computed field: neither a setting nor
    WANDB_ARGS changes it), and a multirun job's sys.argv is the whole sweep's command line."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "", *args]
    try:
        yield
    finally:
        sys.argv = saved


def summarise_best(logger: WandbLogger, best: Mapping[str, str]) -> None:
    """W&B's summary of each metric in `best` ({"val/acc": "max"}): its best and its last value
    (`val/acc.max`, `val/acc.last`), not only the last one W&B keeps by default. The step axis
    stays Lightning's (`trainer/global_step`, which Lightning sets for every metric with "*")."""
    for metric, mode in best.items():
        logger.experiment.define_metric(
            metric, step_metric="trainer/global_step", step_sync=True, summary=f"{mode},last"
        )


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
