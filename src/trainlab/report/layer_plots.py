"""Layer statistics against depth across a study: one figure per statistic, one line per option of
the study's axes (mean over seeds, band min-max), at init and at the end of training.

These are He et al.'s figure (2015, "Delving deep into rectifiers", Fig. 2-3: the response std of
each layer of a deep ReLU net, Xavier against their init) and Glorot & Bengio's (2010, Fig. 6-7:
activation and gradient spread per layer), drawn from the `layer_stats.csv` every job writes
(trainlab.callbacks.layer_stats): `report_layers_<stat>.png` in the multirun directory.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from trainlab.report.drawing import FigureTask
from trainlab.report.plots import option_colours
from trainlab.report.tables import SEED_KEYS

LAYER_STATS_FILE = "layer_stats.csv"
WHEN = ("init", "end")  # the first sampled step (step 0: the network as initialised) and the last


def job_layer_stats(job: Path) -> pd.DataFrame | None:
    """A job's `layer_stats.csv` (step, layer, depth, stat, value); None when it has none."""
    path = Path(job) / LAYER_STATS_FILE
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame if len(frame) else None


def job_figures(multirun_dir: Path) -> list[Path]:
    """Each job's own `layer_stats_<stat>.png`, drawn from its layer_stats.csv, as a single run
    draws them at the end of fit (the jobs of a multirun leave them out by default:
    callbacks.layer_stats.plots=auto). Returns the files written."""
    from trainlab.callbacks.layer_stats.plots import plot_against_depth
    from trainlab.callbacks.layer_stats.record import read_csv
    from trainlab.report.collect import job_dirs

    written = []
    for job in job_dirs(Path(multirun_dir)):
        path = job / LAYER_STATS_FILE
        rows = read_csv(path) if path.is_file() else []
        if rows:
            written += plot_against_depth(job, rows).values()
    return written


def _option(job: pd.Series, group_keys: list[str]) -> str:
    if not group_keys:
        return "all jobs"
    if len(group_keys) == 1:
        return str(job[group_keys[0]])
    return ", ".join(f"{key}={job[key]}" for key in group_keys)


def depth_profiles(
    jobs: pd.DataFrame, axes: list[str], stat: str, stats_of: dict[str, pd.DataFrame | None] | None = None
) -> pd.DataFrame:
    """The plotted series of `stat`: one row per option (of the non-seed axes), `when` (init: the
    job's first sampled step; end: its last) and depth, with `mean`, `std`, `min`, `max` over
    the option's jobs (its seeds), `jobs` (how many) and `steps` (the sampled steps they had).
    `stats_of` holds the jobs' CSVs already read, by path."""
    group_keys = [a for a in axes if a not in SEED_KEYS]
    samples = []
    for _, job in jobs.iterrows():
        stats = stats_of[job["path"]] if stats_of is not None else job_layer_stats(Path(job["path"]))
        if stats is None:
            continue
        stats = stats[stats["stat"] == stat]
        if not len(stats):
            continue
        for when, step in zip(WHEN, (stats["step"].min(), stats["step"].max()), strict=True):
            at = stats[stats["step"] == step]
            samples.append(
                pd.DataFrame(
                    {
                        "option": _option(job, group_keys),
                        "when": when,
                        "step": step,
                        "job": job["job"],
                        "depth": at["depth"].to_numpy(),
                        "value": at["value"].to_numpy(),
                    }
                )
            )
    if not samples:
        return pd.DataFrame(columns=["option", "when", "depth", "mean", "std", "min", "max", "jobs", "steps"])
    values = pd.concat(samples, ignore_index=True)
    grouped = values.groupby(["option", "when", "depth"], sort=True)
    profiles = grouped["value"].agg(["mean", "std", "min", "max"])
    profiles["jobs"] = grouped["job"].nunique()
    profiles["steps"] = grouped["step"].agg(lambda s: ",".join(map(str, sorted(set(s)))))
    return profiles.reset_index()


def layer_figure(
    jobs: pd.DataFrame,
    axes: list[str],
    stat: str,
    path: Path,
    stats_of: dict[str, pd.DataFrame | None] | None = None,
) -> pd.DataFrame | None:
    """Write `path`: `stat` against depth, at init (left) and at the end (right), a line per option
    (mean over seeds) with its min-max band. Returns the plotted series (`depth_profiles`), or
    None when no job recorded `stat`."""
    profiles = depth_profiles(jobs, axes, stat, stats_of)
    if not len(profiles):
        return None
    group_keys = [a for a in axes if a not in SEED_KEYS]
    colours = option_colours(list(profiles["option"].unique()))
    # fixed margins: a layout engine (tight_layout) doubled the time of each figure
    figure = Figure(figsize=(10, 3.8))  # no pyplot: see trainlab.report.plots
    panels = figure.subplots(1, 2, sharey=True)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.82, wspace=0.06)
    for panel, when in zip(panels, WHEN, strict=True):
        at = profiles[profiles["when"] == when]
        for option, colour in colours.items():
            line = at[at["option"] == option].sort_values("depth")
            if not len(line):
                continue
            seeds = int(line["jobs"].max())
            panel.plot(line["depth"], line["mean"], "o-", ms=3, color=colour, label=f"{option} ({seeds})")
            if seeds > 1:
                panel.fill_between(line["depth"], line["min"], line["max"], color=colour, alpha=0.2, lw=0)
        steps = sorted({int(s) for cell in at["steps"] for s in str(cell).split(",")})
        step = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
        panel.set_title(f"at init ({step})" if when == "init" else f"at the end ({step})")
        panel.set_xlabel("depth (activation layer)")
        panel.xaxis.get_major_locator().set_params(integer=True)
    panels[0].set_ylabel(stat)
    # spreads (std, norms, ratios) vanish or explode over depth: log scale when they span more
    # than a decade
    low, high = profiles["min"].min(), profiles["max"].max()
    if stat.endswith(("std", "norm", "ratio")) and low > 0 and math.isfinite(high) and high > 10 * low:
        panels[0].set_yscale("log")
    panels[1].legend(title=", ".join(group_keys) + " (jobs)" if group_keys else None, fontsize=7)
    figure.suptitle(f"{stat} against depth (mean over seeds, band: min-max)")
    figure.savefig(path, dpi=120)
    return profiles


def layer_plot_tasks(jobs: pd.DataFrame, axes: list[str], out_dir: Path) -> list[FigureTask]:
    """One task per statistic the jobs' layer_stats.csv hold, in the order the CSV lists them
    (none when no job has one): each draws `report_layers_<stat>.png` and returns its path, or
    None when no job recorded the statistic (trainlab.report.drawing runs them)."""
    stats_of = {job: job_layer_stats(Path(job)) for job in jobs["path"]}  # each CSV read once
    stats: list[str] = []
    for frame in stats_of.values():
        if frame is not None:
            stats += [s for s in frame["stat"].unique() if s not in stats]

    def task(stat: str) -> FigureTask:
        path = Path(out_dir) / f"report_layers_{stat}.png"
        return lambda: path if layer_figure(jobs, axes, stat, path, stats_of) is not None else None

    return [task(stat) for stat in stats]


def markdown_section(paths: list[Path]) -> str:
    """report.md's section listing the figures (empty when there are none)."""
    if not paths:
        return ""
    lines = [
        "",
        "## Layer statistics against depth",
        "",
        "Each statistic of `layer_stats.csv` against depth, at init (step 0) and at the last sampled "
        "step: a line per option (mean over seeds), band min-max.",
        "",
    ]
    lines += [f"- `{path.name}`: ![{path.stem}]({path.name})" for path in paths]
    return "\n".join(lines) + "\n"
