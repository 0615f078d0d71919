"""Aggregate jobs over seeds and render the study table (mean ± std, best option marked)."""

from __future__ import annotations

import pandas as pd

SEED_KEYS = ("seed",)
# Metrics shown in the table, in this order, when present; higher is better for accuracies.
PREFERRED_METRICS = ("test/acc", "val/acc", "train/acc", "test/loss", "val/loss", "train/loss")


def metric_columns(jobs: pd.DataFrame) -> list[str]:
    present = [c.removeprefix("metric:") for c in jobs.columns if c.startswith("metric:")]
    return [m for m in PREFERRED_METRICS if m in present]


def main_metric(jobs: pd.DataFrame) -> str | None:
    metrics = metric_columns(jobs)
    return metrics[0] if metrics else None


def higher_is_better(metric: str) -> bool:
    return "acc" in metric or "f1" in metric or "auroc" in metric


def aggregate(jobs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """One row per option combination of the non-seed axes: n, completed, mean and std per metric."""
    group_keys = [a for a in axes if a not in SEED_KEYS]
    metrics = metric_columns(jobs)
    done = jobs[jobs["status"] == "completed"]
    columns = {f"metric:{m}": ["mean", "std"] for m in metrics}
    columns["wall_time_s"] = ["mean"]
    if not group_keys:
        grouped = done.assign(_all="all").groupby("_all")
    else:
        grouped = done.groupby(group_keys, dropna=False, sort=True)
    table = grouped.agg(columns) if len(done) else pd.DataFrame()
    if len(table):
        table.columns = [f"{c.removeprefix('metric:')} {stat}" for c, stat in table.columns]
    counts = (
        jobs.groupby(group_keys, dropna=False, sort=True)
        if group_keys
        else jobs.assign(_all="all").groupby("_all")
    ).size()
    table = table.reindex(counts.index)
    table.insert(0, "jobs", counts)
    table.insert(1, "completed", done.groupby(group_keys, dropna=False).size() if group_keys else len(done))
    table["completed"] = table["completed"].fillna(0).astype(int)
    return table.reset_index().drop(columns=["_all"], errors="ignore")


def _cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def markdown(jobs: pd.DataFrame, axes: list[str], title: str) -> str:
    """The report: aggregated table with the best option per metric in bold, then the failures."""
    table = aggregate(jobs, axes)
    group_keys = [a for a in axes if a not in SEED_KEYS]
    metrics = metric_columns(jobs)
    header = [*group_keys, "jobs", "completed", *metrics, "wall time (s)"]
    best = {}
    for m in metrics:
        means = table.get(f"{m} mean")
        if means is not None and means.notna().any():
            best[m] = means.idxmax() if higher_is_better(m) else means.idxmin()
    lines = [f"# {title}", ""]
    seeds = sorted(jobs["seed"].astype(str).unique()) if "seed" in jobs else []
    lines.append(
        f"{len(jobs)} jobs; axes: {', '.join(axes) or 'none'}"
        + (f"; seeds: {', '.join(seeds)}" if len(seeds) > 1 else "")
    )
    lines.append("Values: mean ± std over seeds (completed jobs only); **bold**: best per metric.")
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for index, row in table.iterrows():
        cells = [str(row[k]) for k in group_keys] + [str(row["jobs"]), str(row["completed"])]
        for m in metrics:
            cell = _cell(row.get(f"{m} mean"), row.get(f"{m} std"))
            cells.append(f"**{cell}**" if best.get(m) == index else cell)
        wall = row.get("wall_time_s mean")
        cells.append("–" if pd.isna(wall) else f"{wall:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    pruned = jobs[jobs["status"] == "pruned"]
    problems = jobs[~jobs["status"].isin(("completed", "pruned"))]
    if len(pruned):  # a search's trials stopped early by its pruner: an outcome, not a failure
        lines += ["", f"## Trials pruned by the search ({len(pruned)})", ""]
        lines += [_job_line(job, axes) for _, job in pruned.iterrows()]
    lines += ["", f"## Jobs that did not complete ({len(problems)})", ""]
    if not len(problems):
        lines.append("None.")
    lines += [_job_line(job, axes) for _, job in problems.iterrows()]
    return "\n".join(lines) + "\n"


def _job_line(job: pd.Series, axes: list[str]) -> str:
    setting = ", ".join(f"{a}={job[a]}" for a in axes) or job["path"]
    return f"- job {job['job']} ({setting}): **{job['status']}** — {job['error']}"
