"""A saved W&B workspace (a view of the project) for one study: its runs grouped by the study
axes, the accuracy panels, a parallel-coordinates plot of the axes against val/acc and the
layer statistics of every run overlaid. Built with `wandb-workspaces` (the extra
`pip install 'trainlab[workspace]'`); `python -m trainlab.report <multirun dir> --wandb-workspace`.

Offline (WANDB_MODE=offline, or not logged in) nothing is sent: the view is built and printed.
"""

from __future__ import annotations

from typing import Any

# The study's runs, compared on these (keys as trainlab logs them; see callbacks/layer_stats).
ACCURACY_CURVES = ("val/acc", "train/acc")
FINAL_METRICS = ("test/acc", "val/acc")
LAYER_STATS = ("act_std", "grad_std")  # overlaid per layer: layer_stats_<stat>/L<depth>
OFFLINE_ENTITY = "<your W&B entity>"


def _section(stat: str) -> str:
    """The W&B section (first key segment) of a layer statistic, as LayerStats logs it."""
    from trainlab.callbacks.layer_stats.record import metric_key

    return metric_key(stat, 0).split("/", 1)[0]


def _libraries():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as error:
        raise ImportError(
            "--wandb-workspace needs the wandb-workspaces package: pip install 'trainlab[workspace]'"
        ) from error
    return ws, wr


def study_workspace(project: str, entity: str | None, group: str, axes: list[str]) -> Any:
    """The view of the study whose runs share the W&B `group`, grouped by `axes` (config keys,
    e.g. `init`; the seed is what a group averages over, so never one of them)."""
    ws, wr = _libraries()
    axes = [a for a in axes if a != "seed"]
    accuracy = ws.Section(
        name="Accuracy",
        is_open=True,
        panels=[
            *[wr.LinePlot(title=m, y=[m]) for m in ACCURACY_CURVES],
            wr.BarPlot(
                title="test/acc", metrics=["test/acc"], groupby_aggfunc="mean", groupby_rangefunc="stddev"
            ),
        ],
    )
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(a)) for a in axes]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("val/acc"))]
    study_axes = ws.Section(
        name="Study axes",
        is_open=True,
        panels=[wr.ParallelCoordinatesPlot(title="study axes vs val/acc", columns=columns)],
    )
    layer_stats = ws.Section(
        name="Layer statistics",
        is_open=True,
        panels=[
            wr.LinePlot(title=f"{stat} (every layer)", metric_regex=f"{_section(stat)}/.*")
            for stat in LAYER_STATS
        ],
    )
    return ws.Workspace(
        name=f"study {group}",
        entity=entity or OFFLINE_ENTITY,
        project=project,
        sections=[accuracy, study_axes, layer_stats],
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == group, ws.Metric("JobType") != "report"],
            groupby=[ws.Config(a) for a in axes],
        ),
    )


def describe(workspace: Any) -> str:
    """What the view shows, one line per part: for the terminal, and the offline answer."""
    settings = workspace.runset_settings
    lines = [
        f"W&B view {workspace.name!r} in {workspace.entity}/{workspace.project}",
        f"  runs: {settings.filters}",
        f"  grouped by: {', '.join(g.name for g in settings.groupby) or 'nothing (no axis varies)'}",
    ]
    for section in workspace.sections:
        lines.append(f"  section {section.name}:")
        lines += [f"    {_panel_line(panel)}" for panel in section.panels]
    return "\n".join(lines)


def _panel_line(panel: Any) -> str:
    kind = type(panel).__name__
    if kind == "ParallelCoordinatesPlot":
        return f"{kind} over {', '.join(c.metric.name for c in panel.columns)}"
    if kind == "LinePlot" and panel.metric_regex:
        return f"{kind} {panel.title!r}: every key matching {panel.metric_regex}"
    metrics = getattr(panel, "y", None) or getattr(panel, "metrics", None) or []
    return f"{kind} {panel.title!r}: {', '.join(str(m) for m in metrics)}"


def save_workspace(workspace: Any) -> str:
    """Save the view to W&B (needs a login and the network); its URL."""
    import wandb

    if workspace.entity == OFFLINE_ENTITY:
        workspace.entity = wandb.Api().default_entity
    return workspace.save().url
