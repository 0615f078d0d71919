"""Plots of the layer statistics against depth, as in Glorot & Bengio (2010) and He et al. (2015)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import yaml

from trainlab.callbacks.layer_stats.measure import STATS
from trainlab.utils.overrides import parse_override

# overrides that say where a run writes and what it shows, not what it is
_PLUMBING = ("hydra.", "paths.", "callbacks.", "logger", "trainer.enable_")


def run_label(directory: Path) -> str:
    """What the run is, for a figure's title: its own overrides (`init=zeros activation=tanh`),
    else its directory (`runs/2026-01-01_12-00-00_000000`)."""
    overrides_file = Path(directory) / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else None) or []
    shown = [o for o in overrides if not parse_override(o).key.startswith(_PLUMBING)]
    directory = Path(directory).resolve()
    return " ".join(shown) or f"{directory.parent.name}/{directory.name}"


def plot_against_depth(directory: Path, rows: list[dict]) -> dict[str, Path]:
    """`layer_stats_<stat>.png` in `directory` for every statistic in `rows` (dicts with step,
    depth, stat, value): value against depth at the first sampled step (step 0: init) and the
    last. Returns {stat: path}."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg renders
    from matplotlib.ticker import MaxNLocator

    steps = sorted({r["step"] for r in rows})
    run_lines = textwrap.wrap(run_label(directory), 64, break_on_hyphens=False)[:2]
    shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
    paths = {}
    for stat in STATS:
        curves = {
            step: sorted((r["depth"], r["value"]) for r in rows if r["stat"] == stat and r["step"] == step)
            for step in shown
        }
        curves = {step: points for step, points in curves.items() if points}
        if not curves:
            continue
        figure = Figure(figsize=(6, 4), dpi=100)  # fixed margins: a layout engine doubles the time
        # room for the title's lines (a 9-point line is 4% of the height) and 7-digit tick labels
        figure.subplots_adjust(left=0.16, right=0.97, bottom=0.12, top=0.91 - 0.04 * len(run_lines))
        axes = figure.add_subplot()
        for step, points in curves.items():
            depths, values = zip(*points, strict=True)
            label = (
                "init (step 0)" if step == 0 else f"step {step}" + (" (last)" if step == shown[-1] else "")
            )
            axes.plot(depths, values, "o-", label=label, color="C0" if step == shown[0] else "C3")
        values = [v for points in curves.values() for _, v in points]
        # spreads (std, norms, ratios) vanish or explode over depth: log scale when they span
        # more than a decade
        positive = all(v > 0 and math.isfinite(v) for v in values)
        if stat.endswith(("std", "norm", "ratio")) and positive and max(values) > 10 * min(values):
            axes.set_yscale("log")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("depth (activation layer)")
        axes.set_ylabel(stat)
        axes.set_title("\n".join([f"{stat} against depth", *run_lines]), fontsize=9)
        axes.legend()
        paths[stat] = directory / f"layer_stats_{stat}.png"
        directory.mkdir(parents=True, exist_ok=True)
        figure.savefig(paths[stat])
    return paths
