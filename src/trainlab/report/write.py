"""Write a multirun's report files: report.csv, report.md and the PNG plots (also the layer
statistics against depth, when the jobs recorded them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trainlab.report.collect import STATUS_FAILED, load_jobs, typed_settings, varied_axes
from trainlab.report.drawing import draw_all
from trainlab.report.layer_plots import layer_plot_tasks, markdown_section
from trainlab.report.plots import plot_tasks
from trainlab.report.tables import main_metric, markdown
from trainlab.report.wandb_run import log_report_run, wandb_destination

log = logging.getLogger(__name__)


@dataclass
class StudyReport:
    directory: Path
    jobs: pd.DataFrame
    axes: list[str]
    files: list[Path] = field(default_factory=list)

    @property
    def failed_jobs(self) -> pd.DataFrame:
        return self.jobs[self.jobs["status"].isin(STATUS_FAILED)] if len(self.jobs) else self.jobs


def write_report(multirun_dir: str | Path, log_to_wandb: bool = False) -> StudyReport:
    """Read every job of `multirun_dir` and write the report files into it."""
    directory = Path(multirun_dir)
    jobs = load_jobs(directory)
    if not len(jobs):
        raise FileNotFoundError(f"{directory} holds no job directories (<job>/summary.json or <job>/.hydra).")
    axes = varied_axes(jobs)
    report = StudyReport(directory, jobs, axes)
    csv_path = directory / "report.csv"
    jobs.drop(columns=["path"]).rename(columns=lambda c: c.removeprefix("metric:")).to_csv(
        csv_path, index=False
    )
    md_path = directory / "report.md"
    # all figures in one batch, so that they are drawn side by side (trainlab.report.drawing)
    study_plots = plot_tasks(jobs, axes, main_metric(jobs), directory)
    drawn = draw_all([*study_plots, *layer_plot_tasks(jobs, axes, directory)])
    plots = [path for path in drawn[: len(study_plots)] if path is not None]
    layer_plots = [path for path in drawn[len(study_plots) :] if path is not None]
    md_path.write_text(
        markdown(jobs, axes, title=f"Study report: {directory.name}") + markdown_section(layer_plots)
    )
    report.files = [csv_path, md_path, *plots, *layer_plots]
    if log_to_wandb:
        _log_to_wandb(report)
    pruned = int((jobs["status"] == "pruned").sum())
    log.info(
        f"Study report: {md_path} ({len(jobs)} jobs, {len(report.failed_jobs)} did not complete"
        + (f", {pruned} pruned by the search)" if pruned else ")")
    )
    return report


def _log_to_wandb(report: StudyReport) -> None:
    """The table and plots as one W&B run (job_type `report`) in the multirun's group and the
    W&B project (and entity) its jobs logged to; numeric settings and metrics stay numbers."""
    table = typed_settings(report.jobs).drop(columns=["path"])
    log_report_run(
        tables={"report/table": table.rename(columns=lambda c: c.removeprefix("metric:"))},
        images={f"report/{path.stem}": path for path in report.files if path.suffix == ".png"},
        **wandb_destination(Path(p) for p in report.jobs["path"]),
        group=study_group(report.directory, report.jobs),
        dir=str(report.directory),
    )


def study_group(multirun_dir: Path, jobs: pd.DataFrame) -> str:
    """The W&B group of a multirun's jobs, named as trainlab.tracking.naming names it when they run:
    `<experiment or task>-<time>`, the experiment and task read from a job's Hydra files."""
    import yaml

    from trainlab.tracking.naming import group_name

    study = Path(multirun_dir).resolve().parent.parent.name  # logs/<task>/multiruns/<time>
    for job in jobs.get("path", []):
        hydra_file, config_file = Path(job) / ".hydra" / "hydra.yaml", Path(job) / ".hydra" / "config.yaml"
        if hydra_file.is_file() and config_file.is_file():
            choices = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("runtime", {})
            experiment = (choices.get("choices") or {}).get("experiment")
            study = experiment or (yaml.safe_load(config_file.read_text()) or {}).get("task_name") or study
            break
    return group_name(str(study), Path(multirun_dir).resolve().name)


def write_workspace(report: StudyReport, save: bool) -> str:
    """The study's W&B view (trainlab.report.workspace): saved when `save`, and described."""
    from trainlab.report.workspace import describe, save_workspace, study_workspace

    destination = wandb_destination(Path(p) for p in report.jobs["path"])
    workspace = study_workspace(
        axes=report.axes, group=study_group(report.directory, report.jobs), **destination
    )
    text = describe(workspace)
    if save:
        text += f"\nSaved: {save_workspace(workspace)}"
    return text
