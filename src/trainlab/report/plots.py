"""Study plots: the main metric per option of each axis, and learning curves per option.

Each option of an axis keeps one colour in every figure (`option_colours`); values are points
with their spread over seeds, on an axis that is not cut to exaggerate differences; accuracy
plots show the chance level (1/number of classes) when the jobs tell it (`collect.chance_level`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib
import pandas as pd

# Figures are built without pyplot, which would choose (or need) a display backend: a report
# written from a notebook leaves its backend as it was, and servers need no display.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trainlab.report.collect import chance_level, learning_curves
from trainlab.report.drawing import FigureTask, draw_all
from trainlab.report.tables import SEED_KEYS

# Qualitative palettes: distinct colours with no implied order; tab20 when an axis has more options.
PALETTE, LARGE_PALETTE = "tab10", "tab20"
MARKERS = "os^Dv<>P*X"


def option_order(option: str) -> tuple:
    """Sort key of an option name: numbers by value (2 before 10), then by name."""
    return tuple(
        (0, float(p), "") if re.fullmatch(r"-?\d+(\.\d*)?(e-?\d+)?", p) else (1, 0.0, p)
        for p in re.split(r"[,\s]+", option)
    )


def sorted_options(values: Iterable) -> list[str]:
    return sorted({str(v) for v in values}, key=option_order)


def option_colours(options: Iterable) -> dict[str, tuple]:
    """{option: RGBA colour}: the i-th option in sorted order gets the palette's i-th colour, so
    an option has the same colour in every figure drawn from the same set of options."""
    ordered = sorted_options(options)
    palette = matplotlib.colormaps.get_cmap(PALETTE if len(ordered) <= 10 else LARGE_PALETTE)
    return {option: palette(i % palette.N) for i, option in enumerate(ordered)}


def _count_text(counts: Iterable[int], noun: str = "seed") -> str:
    """`3 seeds`, or `2–3 seeds` when the cells differ."""
    counts = [c for c in counts if c]
    if not counts:
        return "no completed job"
    low, high = min(counts), max(counts)
    n = f"{low}" if low == high else f"{low}–{high}"
    return f"{n} {noun}{'s' if high > 1 else ''}"


def _chance_line(ax, chance: float | None, metric: str, values: Iterable[float]) -> None:
    """The chance level on an accuracy plot where it helps: when some value comes within half the
    way from chance to 1 (an option that did not learn, or the first epochs), so that it does not
    squeeze the differences between options that all learned."""
    values = [v for v in values if pd.notna(v)]
    if chance is None or "acc" not in metric or not values or min(values) >= chance + (1 - chance) / 2:
        return
    ax.axhline(chance, color="grey", ls="--", lw=1, zorder=1, label=f"chance (1/{round(1 / chance)})")


def metric_by_axis(
    jobs: pd.DataFrame, axis: str, others: list[str], metric: str, chance: float | None = None
) -> Figure:
    """x = options of `axis` (each in its colour), one marker per combination of the other axes;
    a point = mean over seeds with its std as error bar, small dots = the seeds themselves. The
    chance level where it helps (`_chance_line`)."""
    done = jobs[jobs["status"] == "completed"].copy()
    done["_group"] = done[others].astype(str).agg(", ".join, axis=1) if others else "all"
    options, groups = sorted_options(done[axis]), sorted_options(done["_group"])
    colours = option_colours(jobs[axis])
    column = f"metric:{metric}"
    step = 0.6 / max(1, len(groups))
    figure = Figure(
        figsize=(max(4.5, 1.1 * len(options) * max(1, len(groups)) ** 0.5 + 1.5), 3.8), layout="constrained"
    )
    ax = figure.subplots()
    counts, means = [], []
    for g, group in enumerate(groups):
        for i, option in enumerate(options):
            values = done[(done[axis].astype(str) == option) & (done["_group"] == group)][column].dropna()
            counts.append(len(values))
            if not len(values):
                continue
            x = i + (g - (len(groups) - 1) / 2) * step
            means.append(values.mean())
            ax.scatter([x] * len(values), values, s=9, color=colours[option], alpha=0.45, lw=0, zorder=2)
            ax.errorbar(
                x,
                values.mean(),
                yerr=values.std() if len(values) > 1 else None,
                fmt=MARKERS[g % len(MARKERS)],
                color=colours[option],
                ms=6,
                capsize=4,
                zorder=3,
            )
    if others:  # the markers: which combination of the other axes a point is
        for g, group in enumerate(groups):
            ax.plot([], [], MARKERS[g % len(MARKERS)], color="black", label=f"{', '.join(others)} = {group}")
    _chance_line(ax, chance, metric, means)
    ax.set_xticks(range(len(options)), options, rotation=20 if max(map(len, options), default=0) > 8 else 0)
    ax.set_xlim(-0.5, len(options) - 0.5)
    ax.set_xlabel(axis)
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{metric} by {axis}\nmean ± std over {_count_text(counts)}", fontsize=10)
    return figure


def curves_by_axis(
    jobs: pd.DataFrame, axis: str, metric: str, chance: float | None = None, noun: str = "job"
) -> Figure | None:
    """`metric` per epoch for every job (thin lines) in its option's colour, with the mean per
    option (thick) over its jobs (`noun`: what they differ by, `seed` when only seeds vary); the
    chance level where it helps. None when no job left a metrics file with that metric."""
    figure = Figure(figsize=(5.8, 3.8), layout="constrained")
    ax = figure.subplots()
    colours = option_colours(jobs[axis])
    counts, values = [], []
    for option in sorted_options(jobs[axis]):
        runs = []
        for job in jobs[jobs[axis].astype(str) == option]["path"]:
            frame = learning_curves(Path(job))
            if frame is None or metric not in frame or "epoch" not in frame:
                continue
            per_epoch = frame.dropna(subset=[metric]).groupby("epoch")[metric].last()
            ax.plot(per_epoch.index, per_epoch.values, color=colours[option], alpha=0.3, lw=1)
            runs.append(per_epoch)
            values += list(per_epoch.values)
        if runs:
            mean = pd.concat(runs, axis=1).mean(axis=1)
            ax.plot(mean.index, mean.values, color=colours[option], lw=2.2, marker="o", ms=3, label=option)
            counts.append(len(runs))
    if not counts:
        return None
    _chance_line(ax, chance, metric, values)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(title=axis, fontsize=7, loc="best")
    ax.set_title(
        f"{metric} per epoch by {axis}\nthin: each job; thick: mean over {_count_text(counts, noun)}",
        fontsize=10,
    )
    return figure


def plot_tasks(jobs: pd.DataFrame, axes: list[str], metric: str | None, out_dir: Path) -> list[FigureTask]:
    """One task per figure of every study axis: report_<axis>.png (`metric` by option) and
    curves_<metric>_<axis>.png; each draws and saves its figure and returns its path, or None
    when there was nothing to draw (trainlab.report.drawing runs them)."""
    tasks: list[FigureTask] = []
    study_axes = [a for a in axes if a not in SEED_KEYS]
    if not study_axes:  # seeds only: no option to compare
        return tasks
    chance = chance_level(jobs)
    noun = "seed" if len(study_axes) == 1 else "job"  # the jobs of an option differ by seed only
    for axis in study_axes:
        safe = axis.replace("/", "_").replace(".", "_")
        if metric is not None and (jobs["status"] == "completed").any():
            others = [a for a in study_axes if a != axis]
            path = out_dir / f"report_{safe}.png"
            tasks.append(
                functools.partial(_save_figure, metric_by_axis, (jobs, axis, others, metric, chance), path)
            )
        for curve_metric in ("val/acc", "train/loss_epoch"):
            path = out_dir / f"curves_{curve_metric.replace('/', '_')}_{safe}.png"
            tasks.append(
                functools.partial(
                    _save_figure, curves_by_axis, (jobs, axis, curve_metric, chance, noun), path
                )
            )
    return tasks


def write_plots(jobs: pd.DataFrame, axes: list[str], metric: str | None, out_dir: Path) -> list[Path]:
    """report_<axis>.png and curves_<metric>_<axis>.png for every study axis; their paths."""
    return [path for path in draw_all(plot_tasks(jobs, axes, metric, Path(out_dir))) if path is not None]


def _save_figure(draw: Callable[..., Figure | None], arguments: tuple, path: Path) -> Path | None:
    figure = draw(*arguments)
    return None if figure is None else save(figure, path)


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path
