"""The LayerStats callback: when layer statistics are sampled, recorded and drawn (the
statistics themselves: trainlab.callbacks.layer_stats, `measure`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

from trainlab.callbacks.layer_stats import record  # the package: its statistics modules
from trainlab.callbacks.layer_stats.measure import STATS, LayerMeasurement, Sample, histogram
from trainlab.callbacks.layer_stats.plots import plot_against_depth
from trainlab.utils.config import ConfigError
from trainlab.utils.logging_steps import is_logging_step

log = logging.getLogger(__name__)

__all__ = ["STATS", "LayerStats", "histogram"]


class LayerStats(LayerMeasurement, pl.Callback):
    """Log per-layer statistics (see the module's docstring) every `every_n_steps` training steps.

    Args:
        every_n_steps: sample the training steps whose global step is a multiple of this (step 0,
            the first batch, sees the network at init).
        saturation_threshold: a tanh unit is saturated when |y| > threshold, a sigmoid when
            y > threshold or y < 1 - threshold (any bounded unit: within 1 - threshold of a bound).
        histograms: also send histograms of pre-activations, activations and gradients to W&B
            (only when a WandbLogger is attached), of the layers `histogram_layers` names.
        histogram_layers: the layers (depths, 1 = first) that get histograms: None for the first,
            the middle and the last, a list of depths, or "all".
        table: at the end of fit, send the samples to W&B as one Table `layer_stats/table`
            (depth, layer, statistic, value, step; at most 10,000 rows: see record.table_steps).
        plots: after fit, write `layer_stats_<stat>.png` (the statistic against depth, at the
            first and the last sampled step) in the run directory, and send them to W&B (not
            under fast_dev_run). "auto" (the default): in a single run, and not in the jobs of a
            multirun, whose study report draws the same statistics against depth for all jobs
            (report_layers_<stat>.png); the nine figures took more time than a small job's
            training (scripts/bench/study_overhead.py). `python -m trainlab.report <multirun dir>
            --job-figures` draws the jobs' own from their CSVs later.
        filename: the CSV written in the run directory (trainer.default_root_dir), long format
            `step, layer, depth, stat, value`, appended at every sample.
        csv_logger: also send the numbers to Lightning's CSVLogger (one column per layer and
            statistic in csv/metrics.csv); off, as the CSV above holds them.

    Metrics `layer_stats_<stat>/L<depth>` go to the trainer's loggers with the sampled step.
    Only the global-zero process measures (every DDP rank runs the same network).
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        saturation_threshold: float = 0.99,
        histograms: bool = True,
        plots: bool | str = "auto",
        filename: str = "layer_stats.csv",
        csv_logger: bool = False,
        histogram_layers: Sequence[int] | str | None = None,
        table: bool = True,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.layer_stats.every_n_steps={every_n_steps} must be >= 1.")
        super().__init__(saturation_threshold)
        self.every_n_steps = every_n_steps
        self.histograms = histograms
        self.histogram_layers = _checked_histogram_layers(histogram_layers)
        self.table = table
        if plots not in (True, False, "auto"):
            raise ConfigError(
                f"callbacks.layer_stats.plots={plots!r}: expected true, false or auto (in single runs, "
                "not in the jobs of a multirun)."
            )
        self.plots = plots
        self.filename = filename
        self.csv_logger = csv_logger
        self.rows: list[dict] = []  # everything recorded, as in the CSV
        self._last_step: int | None = None
        self._measured: list[Sample] = []  # closed samples not read back yet
        self._logging_step = False

    # --- setup ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.find_layers(getattr(pl_module, "net", pl_module))
        self._wandb = self.histograms and any(isinstance(lg, WandbLogger) for lg in trainer.loggers)
        if not self._names:
            log.info("layer_stats: the network has no activation module; no layer statistics.")
        self._histogram_depths = histogram_depths(self.histogram_layers, len(self._names))

    def _sampled(self, trainer: pl.Trainer) -> bool:
        step = trainer.global_step
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and step % self.every_n_steps == 0
            and step != self._last_step  # the first micro-batch only, under gradient accumulation
        )

    # --- a sampled step -------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._logging_step = is_logging_step(trainer)
        if not self._names or not self._sampled(trainer):
            return
        self._close_sample()  # a sample still waiting for its optimizer step (should not happen)
        self._last_step = trainer.global_step
        self._start_sample(trainer.global_step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._before_update()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._remove_hooks()
        if self._after_update():
            self._close_sample()
        # read back on logging steps only: a sampled step that is not one makes no host sync
        if self._logging_step:
            self._flush(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._remove_hooks()
        self._close_sample()
        self._flush(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._remove_hooks()

    # --- recording ------------------------------------------------------------------------------
    def _close_sample(self) -> None:
        """The sample measured so far waits, on the device, for the next logging step or epoch end."""
        sample = self._take_sample()
        if sample is not None and sample.layers:
            sample.weights_before = None  # the update ratios are computed: free the weights' copies
            self._measured.append(sample)

    def _flush(self, trainer: pl.Trainer) -> None:
        """Read back, write and log the samples measured since the last flush."""
        samples, self._measured = self._measured, []
        for sample in samples:
            rows = record.rows_of(sample)
            self.rows.extend(rows)
            record.append_csv(Path(trainer.default_root_dir) / self.filename, rows)
            record.log_sample(
                trainer.loggers, sample, rows, csv_logger=self.csv_logger, histograms=self._wandb
            )

    def _wandb_histograms(self, sample: Sample) -> dict:
        return record.wandb_histograms(sample)

    # --- plots against depth --------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self._close_sample()
        self._flush(trainer)
        if not self.rows or not trainer.is_global_zero:
            return
        # from the CSV: after a resume it also holds the first run's samples, step 0 included
        directory = Path(trainer.default_root_dir)
        rows = record.read_csv(directory / self.filename)
        if self.table:
            record.log_table(trainer.loggers, rows)
        # fast_dev_run (debug=fdr) is a smoke test of one batch: the CSV, but no plots of one step
        if not self._draws_plots() or trainer.fast_dev_run:
            return
        paths = self.plot(directory, rows)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for stat, path in paths.items():
                    logger.log_image(key=f"layer_stats/{stat}_vs_depth", images=[str(path)])

    def _draws_plots(self) -> bool:
        if self.plots == "auto":
            from trainlab.utils.hydra_job import in_multirun

            return not in_multirun()
        return self.plots

    def plot(self, directory: Path, rows: list[dict] | None = None) -> dict[str, Path]:
        """`layer_stats_<stat>.png` for every statistic in `rows` (default: this fit's); see
        trainlab.callbacks.layer_stats.plots. Returns {stat: path}."""
        return plot_against_depth(directory, self.rows if rows is None else rows)


def _checked_histogram_layers(setting: Sequence[int] | str | None) -> tuple[int, ...] | str | None:
    if setting is None or setting == "all":
        return setting
    if isinstance(setting, str) or not all(isinstance(d, int) and d >= 1 for d in setting):
        raise ConfigError(
            f"callbacks.layer_stats.histogram_layers={setting!r}: expected null (the first, middle "
            "and last layer), a list of layer depths >= 1 (e.g. [1, 15, 30]) or 'all'."
        )
    return tuple(setting)


def histogram_depths(setting: Sequence[int] | str | None, layers: int) -> frozenset[int] | None:
    """The depths whose histograms go to W&B (None: all) of a network of `layers` activation
    layers: by default the first, the middle and the last, which a deep network's auto-panels
    can show without drowning the other panels (3 layers x 3 histograms)."""
    if setting == "all" or layers == 0:
        return None
    if setting is None:
        return frozenset({1, (layers + 1) // 2, layers})
    beyond = [d for d in setting if d > layers]
    if beyond:
        raise ConfigError(
            f"callbacks.layer_stats.histogram_layers={list(setting)}: the network has {layers} "
            f"activation layers, so depth(s) {beyond} do not exist; choose depths in 1..{layers} or 'all'."
        )
    return frozenset(setting)
