"""Recording a measured sample: one read-back, then the CSV, the trainer's loggers and W&B histograms."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from trainlab.callbacks.layer_stats.measure import STATS, Layer, Sample

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


def metric_key(layer: Layer) -> str:
    """A metric-name-safe label that sorts by depth: L03_blocks_2."""
    return f"L{layer.depth:02d}_" + "".join(c if c.isalnum() else "_" for c in layer.name)


def log_sample(
    loggers: list[Logger], sample: Sample, rows: list[dict], csv_logger: bool, histograms: bool
) -> None:
    """`layers/<stat>/L<depth>_<layer>` to every logger at the sampled step (to Lightning's
    CSVLogger only with `csv_logger`), plus the histograms to W&B when `histograms`."""
    metrics = {f"layers/{r['stat']}/{metric_key(sample.layers[r['depth'] - 1])}": r["value"] for r in rows}
    for logger in loggers:
        if isinstance(logger, CSVLogger) and not csv_logger:
            continue
        extra = wandb_histograms(sample) if isinstance(logger, WandbLogger) and histograms else {}
        logger.log_metrics({**metrics, **extra}, step=sample.step)


def wandb_histograms(sample: Sample) -> dict:
    """`layers_hist/<what>/<layer>`: wandb.Histogram of each histogram the sample took."""
    import wandb

    entries = [
        (f"layers_hist/{what}/{metric_key(layer)}", counts, bounds)
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
            {"step": int(r["step"]), "depth": int(r["depth"]), "stat": r["stat"], "value": float(r["value"])}
            for r in csv.DictReader(file)
        ]
