"""Recording a measured sample: one read-back, then the CSV, the trainer's loggers and W&B histograms;
at the end of fit, the samples as one W&B Table.

W&B names: W&B's workspace puts a key in the section named by its first `/` segment and draws one
panel per key, so each statistic gets its own section, `layer_stats_<stat>/L<depth>` (one panel per
layer, in depth order), the histograms one section `layer_stats_hist/<what>/L<depth>` (the chosen
layers only), and the table and the plots against depth the section `layer_stats/...`.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from trainlab.callbacks.layer_stats.measure import STATS, Sample

CSV_FIELDS = ("step", "layer", "depth", "stat", "value")


def rows_of(sample: Sample) -> list[dict]:
    """The sample's numbers as CSV rows (one host-device sync for all of them); an undefined
    update ratio (NaN: an all-zero weight) is left out."""
    keys = [(layer, stat) for layer in sample.layers for stat in STATS if stat in layer.values]
    numbers = torch.stack([layer.values[stat].reshape(()) for layer, stat in keys]).tolist()
    return [
        {"step": sample.step, "layer": layer.name, "depth": layer.depth, "stat": stat, "value": value}
        for (layer, stat), value in zip(keys, numbers, strict=True)
        if not (stat == "update_ratio" and math.isnan(value))
    ]


TABLE_KEY = "layer_stats/table"
TABLE_COLUMNS = ("depth", "layer", "statistic", "value", "step")
# W&B's limit for a Table logged with run.log (wandb.Table.MAX_ROWS): a longer one is cut
TABLE_MAX_ROWS = 10_000


def metric_key(stat: str, depth: int) -> str:
    """The W&B key of a statistic of the layer at `depth`: `layer_stats_act_std/L03` (a section
    per statistic; zero-padded depths sort in depth order)."""
    return f"layer_stats_{stat}/L{depth:02d}"


def histogram_key(what: str, depth: int) -> str:
    return f"layer_stats_hist/{what}/L{depth:02d}"


def log_sample(
    loggers: list[Logger], sample: Sample, rows: list[dict], csv_logger: bool, histograms: bool
) -> None:
    """`layer_stats_<stat>/L<depth>` to every logger at the sampled step (to Lightning's
    CSVLogger only with `csv_logger`), plus the histograms to W&B when `histograms`."""
    metrics = {metric_key(r["stat"], r["depth"]): r["value"] for r in rows}
    for logger in loggers:
        if isinstance(logger, CSVLogger) and not csv_logger:
            continue
        extra = wandb_histograms(sample) if isinstance(logger, WandbLogger) and histograms else {}
        logger.log_metrics({**metrics, **extra}, step=sample.step)


def wandb_histograms(sample: Sample) -> dict:
    """`layer_stats_hist/<what>/L<depth>`: wandb.Histogram of each histogram the sample took (the
    measurement takes them of the chosen layers only)."""
    import wandb

    entries = [
        (histogram_key(what, layer.depth), counts, bounds)
        for layer in sample.layers
        for what, (counts, bounds) in layer.histograms.items()
    ]
    if not entries:
        return {}
    names, counts, bounds = zip(*entries, strict=True)
    # two read-backs for all of them (the histograms stay on the device until now)
    counts, bounds = torch.stack(counts).cpu(), torch.stack(bounds).tolist()
    histograms = {}
    for name, row, (low, high) in zip(names, counts, bounds, strict=True):
        if not row.any():  # no finite value
            continue
        if low == high:  # torch.histc's own range for a constant tensor
            low, high = low - 1.0, high + 1.0
        edges = torch.linspace(low, high, row.numel() + 1)
        histograms[name] = wandb.Histogram(np_histogram=(row.numpy(), edges.numpy()))
    return histograms


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append `rows` to the long-format CSV `step, layer, depth, stat, value` (header when new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV written by `append_csv`, with their numbers parsed."""
    with path.open(newline="") as file:
        return [
            {
                "step": int(r["step"]),
                "layer": r["layer"],
                "depth": int(r["depth"]),
                "stat": r["stat"],
                "value": float(r["value"]),
            }
            for r in csv.DictReader(file)
        ]


def table_steps(rows: list[dict], max_rows: int = TABLE_MAX_ROWS) -> list[int]:
    """The sampled steps the W&B table keeps: all of them while their rows fit in `max_rows`,
    else the first (init), the last and evenly spaced ones between, as many as fit (at least
    those two)."""
    per_step = Counter(r["step"] for r in rows)
    steps = sorted(per_step)
    keep = max(2, max_rows // max(per_step.values(), default=1))
    if len(steps) <= keep:
        return steps
    picks = {round(i * (len(steps) - 1) / (keep - 1)) for i in range(keep)}
    return [steps[i] for i in sorted(picks)]


def table_rows(rows: list[dict], max_rows: int = TABLE_MAX_ROWS) -> list[list]:
    """`rows` (CSV rows) as the W&B table's rows, `depth, layer, statistic, value, step`, of the
    steps `table_steps` keeps, ordered by step, statistic and depth."""
    kept = set(table_steps(rows, max_rows))
    chosen = sorted((r for r in rows if r["step"] in kept), key=lambda r: (r["step"], r["stat"], r["depth"]))
    return [[r["depth"], r["layer"], r["stat"], r["value"], r["step"]] for r in chosen]


def log_table(loggers: list[Logger], rows: list[dict]) -> None:
    """The samples as one W&B Table under `layer_stats/table` (once, at the end of fit): a custom
    chart or a query panel over it overlays runs, e.g. act_std against depth per init scheme."""
    data = table_rows(rows)
    for logger in loggers:
        if isinstance(logger, WandbLogger) and data:
            logger.log_table(key=TABLE_KEY, columns=list(TABLE_COLUMNS), data=data)
