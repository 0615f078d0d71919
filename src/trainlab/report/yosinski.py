"""The Yosinski et al. (2014) transfer study's report: test accuracy against the transfer depth n.

A view of the study's jobs as the study report reads them (trainlab.report.collect.load_jobs):
each job's status, metrics and overrides `study.kind` (baseA, baseB, AnB, AnB+, BnB, BnB+),
`study.n` and `seed`. Writes into the study directory:

- `yosinski.csv`: one row per job (kind, n, seed, test/acc, val/acc, status, job);
- `yosinski.md`: test accuracy, rows n, columns baseB AnB AnB+ BnB BnB+ (mean over seeds,
  +- std with several seeds), and how to read it;
- `yosinski.png`: the paper's Fig. 2 (top): one marker per run and a line through the means.

`python -m trainlab.report.yosinski <study dir>` writes it again (e.g. after a failed job re-ran).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trainlab.report.collect import DEFAULT, load_jobs
from trainlab.report.wandb_run import log_report_run

KINDS = ("baseB", "AnB", "AnB+", "BnB", "BnB+")
# Fig. 2 of the paper: BnB dark blue circles, BnB+ light blue, AnB red diamonds, AnB+ pink.
STYLE = {
    "baseB": {"color": "black", "marker": "o", "markerfacecolor": "white"},
    "BnB": {"color": "#1f3fbf", "marker": "o"},
    "BnB+": {"color": "#7fb2ff", "marker": "o"},
    "AnB": {"color": "#d62728", "marker": "D"},
    "AnB+": {"color": "#f4a3c0", "marker": "D"},
}
METRIC = "test/acc"


@dataclass
class YosinskiReport:
    runs: pd.DataFrame  # one row per job
    table: pd.DataFrame  # rows n, columns kinds: mean test accuracy
    files: dict[str, Path]

    def markdown(self) -> str:
        return self.files["md"].read_text()


def collect_runs(study_dir: Path) -> pd.DataFrame:
    """One row per job of the study that says which kind of run it is (`study.kind`): a view of the
    study's jobs as every report reads them (trainlab.report.collect.load_jobs)."""
    columns = ["kind", "n", "seed", "test_acc", "val_acc", "status", "job"]
    jobs = load_jobs(Path(study_dir))
    if "study.kind" not in jobs:
        return pd.DataFrame(columns=columns)
    jobs = jobs[jobs["study.kind"] != DEFAULT]

    def column(name: str) -> pd.Series:
        return jobs[name] if name in jobs else pd.Series(float("nan"), index=jobs.index)

    runs = pd.DataFrame(
        {
            "kind": jobs["study.kind"],
            "n": pd.to_numeric(column("study.n"), errors="coerce").fillna(0).astype(int),
            "seed": pd.to_numeric(column("seed"), errors="coerce"),
            "test_acc": column(f"metric:{METRIC}"),
            "val_acc": column("metric:val/acc"),
            "status": jobs["status"],
            "job": jobs["job"],
        },
        columns=columns,
    )
    return runs.sort_values(["kind", "n", "seed"], ignore_index=True)


def accuracy_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, std) test accuracy of completed runs: rows n, columns baseB AnB AnB+ BnB BnB+."""
    done = runs[(runs["status"] == "completed") & runs["kind"].isin(KINDS)]
    grouped = done.groupby(["n", "kind"])["test_acc"]
    mean = grouped.mean().unstack("kind").reindex(columns=list(KINDS))
    std = grouped.std().unstack("kind").reindex(columns=list(KINDS))
    return mean, std


def _markdown(runs: pd.DataFrame, mean: pd.DataFrame, std: pd.DataFrame, study_dir: Path) -> str:
    several = runs["seed"].nunique() > 1

    def cell(n: int, kind: str) -> str:
        value = mean.at[n, kind] if n in mean.index else float("nan")
        if pd.isna(value):
            return ""
        spread = std.at[n, kind]
        return f"{value:.4f} ± {spread:.4f}" if several and not pd.isna(spread) else f"{value:.4f}"

    lines = [
        "# Yosinski et al. (2014) transfer study",
        "",
        f"Study directory: `{study_dir}`. Test accuracy on task B"
        + (f" (mean ± std over {runs['seed'].nunique()} seeds)" if several else "")
        + "; n = backbone stages copied from the base network.",
        "",
        "| n | " + " | ".join(KINDS) + " |",
        "| --- |" + " --- |" * len(KINDS),
    ]
    lines += [f"| {n} | " + " | ".join(cell(n, k) for k in KINDS) + " |" for n in mean.index]
    base_a = runs[(runs["kind"] == "baseA") & (runs["status"] == "completed")]["test_acc"]
    failed = runs[runs["status"] != "completed"]
    lines += [
        "",
        "- baseB (n = 0): trained from scratch on B. baseA "
        + (f"reaches {base_a.mean():.4f} on A's test split." if len(base_a) else "did not complete."),
        "- BnB: the first n stages of baseB, frozen; the rest re-initialised and trained on B. A drop "
        "below baseB shows fragile co-adaptation between the stages that were split.",
        "- BnB+: the same, everything fine-tuned: it should recover baseB.",
        "- AnB: the first n stages of baseA (trained on the other classes), frozen. Its fall with n, "
        "beyond BnB's, is how specific to A the features of those stages are.",
        "- AnB+: the same, fine-tuned. Above baseB: transferred features help even after fine-tuning.",
    ]
    if len(failed):
        lines.append(f"- Runs that did not complete ({len(failed)}): " + ", ".join(failed["job"]))
    return "\n".join(lines) + "\n"


def _plot(runs: pd.DataFrame, mean: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: see trainlab.report.plots

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.subplots()
    done = runs[runs["status"] == "completed"]
    for kind in KINDS:
        style = STYLE[kind]
        points = done[done["kind"] == kind]
        if points.empty:
            continue
        offset = {"AnB": 0.06, "AnB+": 0.12, "BnB": -0.12, "BnB+": -0.06}.get(kind, 0.0)
        ax.plot(
            points["n"] + offset, points["test_acc"], "none", alpha=0.7, markersize=6, label=kind, **style
        )
        line = mean[kind].dropna()
        ax.plot(line.index + offset, line.values, color=style["color"], alpha=0.8)
    if "baseB" in mean and not mean["baseB"].dropna().empty:
        ax.axhline(mean["baseB"].dropna().iloc[0], color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("layer n at which the network is chopped and retrained")
    ax.set_ylabel("test accuracy on B (higher is better)")
    ax.set_xticks(sorted(done["n"].unique()))
    ax.set_title("Transfer A -> B (Yosinski et al. 2014, Fig. 2)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write_report(study_dir: str | Path) -> YosinskiReport:
    """Write yosinski.csv, yosinski.md and yosinski.png into the study directory."""
    study_dir = Path(study_dir)
    runs = collect_runs(study_dir)
    if runs.empty:
        raise FileNotFoundError(
            f"{study_dir} holds no runs of a Yosinski study (no summary.json with study.kind)."
        )
    mean, std = accuracy_table(runs)
    files = {
        "csv": study_dir / "yosinski.csv",
        "md": study_dir / "yosinski.md",
        "png": study_dir / "yosinski.png",
    }
    runs.to_csv(files["csv"], index=False)
    files["md"].write_text(_markdown(runs, mean, std, study_dir))
    _plot(runs, mean, files["png"])
    return YosinskiReport(runs, mean, files)


def log_to_wandb(report: YosinskiReport, **init_kwargs: Any) -> str | None:
    """Log the table and the plot as a W&B run of their own (`job_type=report`) in the study's
    group, as every report is (trainlab.report.wandb_run); returns the run's directory.
    `init_kwargs` go to `wandb.init` (project, group, mode...)."""
    table = report.runs.astype({"seed": "float"}).fillna({"test_acc": float("nan")})
    summary = {
        f"yosinski/{kind}/n{n}": float(value)
        for kind in KINDS
        for n, value in report.table[kind].dropna().items()
    }
    return log_report_run(
        tables={"yosinski/runs": table, "yosinski/table": report.table.reset_index()},
        images={"yosinski/plot": report.files["png"]},
        summary=summary,
        **init_kwargs,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m trainlab.report.yosinski <study directory>")
    print(write_report(sys.argv[1]).markdown())
