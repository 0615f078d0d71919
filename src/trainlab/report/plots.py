"""Study plots: the main metric per option of each axis, and learning curves per option."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: reports are written on servers with no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trainlab.report.collect import learning_curves
from trainlab.report.tables import SEED_KEYS


def _options(values: pd.Series) -> list[str]:
    return sorted(values.astype(str).unique(), key=lambda v: (len(v), v))


def metric_by_axis(jobs: pd.DataFrame, axis: str, others: list[str], metric: str, path: Path) -> Path:
    """Grouped bars: x = options of `axis`, one bar per combination of the other axes, height =
    mean over seeds, error bar = std, dots = the individual seeds."""
    done = jobs[jobs["status"] == "completed"].copy()
    done["_group"] = done[others].astype(str).agg(", ".join, axis=1) if others else "all"
    options, groups = _options(done[axis]), sorted(done["_group"].unique())
    width = 0.8 / max(1, len(groups))
    figure, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(options) * max(1, len(groups)) ** 0.5), 3.6))
    for g, group in enumerate(groups):
        means, stds, xs = [], [], []
        for i, option in enumerate(options):
            values = done[(done[axis].astype(str) == option) & (done["_group"] == group)][
                f"metric:{metric}"
            ].dropna()
            x = i - 0.4 + width * (g + 0.5)
            xs.append(x)
            means.append(values.mean() if len(values) else np.nan)
            stds.append(values.std() if len(values) > 1 else 0.0)
            ax.scatter([x] * len(values), values, s=10, color="black", zorder=3)
        label = f"{', '.join(others)} = {group}" if others else None
        ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, label=label, alpha=0.8)
    ax.set_xticks(range(len(options)), options, rotation=20 if max(map(len, options)) > 8 else 0)
    ax.set_xlabel(axis)
    ax.set_ylabel(metric)
    finite = done[f"metric:{metric}"].dropna()
    if len(finite) and "acc" in metric:
        low = max(0.0, finite.min() - 0.1 * max(1e-3, finite.max() - finite.min()) - 0.02)
        ax.set_ylim(low, min(1.0, finite.max() + 0.02))
    if others:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{metric} by {axis} (mean ± std over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def curves_by_axis(jobs: pd.DataFrame, axis: str, metric: str, path: Path) -> Path | None:
    """`metric` per epoch for every job (thin lines), coloured by its option of `axis`, with the
    mean per option (thick). None when no job left a metrics file with that metric."""
    figure, ax = plt.subplots(figsize=(5.5, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for i, option in enumerate(_options(jobs[axis])):
        runs = []
        for job in jobs[jobs[axis].astype(str) == option]["path"]:
            frame = learning_curves(Path(job))
            if frame is None or metric not in frame or "epoch" not in frame:
                continue
            per_epoch = frame.dropna(subset=[metric]).groupby("epoch")[metric].last()
            ax.plot(per_epoch.index, per_epoch.values, color=colours[i % len(colours)], alpha=0.3, lw=1)
            runs.append(per_epoch)
        if runs:
            mean = pd.concat(runs, axis=1).mean(axis=1)
            ax.plot(
                mean.index,
                mean.values,
                color=colours[i % len(colours)],
                lw=2.2,
                marker="o",
                ms=3,
                label=option,
            )
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend(title=axis, fontsize=7)
    ax.set_title(f"{metric} per epoch by {axis}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_plots(jobs: pd.DataFrame, axes: list[str], metric: str | None, out_dir: Path) -> list[Path]:
    written: list[Path] = []
    study_axes = [a for a in axes if a not in SEED_KEYS]
    for axis in study_axes:
        safe = axis.replace("/", "_").replace(".", "_")
        if metric is not None and (jobs["status"] == "completed").any():
            others = [a for a in study_axes if a != axis]
            written.append(metric_by_axis(jobs, axis, others, metric, out_dir / f"report_{safe}.png"))
        for curve_metric in ("val/acc", "train/loss_epoch"):
            name = curve_metric.replace("/", "_")
            path = curves_by_axis(jobs, axis, curve_metric, out_dir / f"curves_{name}_{safe}.png")
            if path is not None:
                written.append(path)
    return written
