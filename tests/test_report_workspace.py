"""The study's W&B view (--wandb-workspace): built and inspected without the network, never saved."""

from __future__ import annotations

import socket

import pytest

from test_report_wandb import job
from trainlab.report.__main__ import main as report_main

pytest.importorskip("wandb_workspaces", reason="the workspace extra: pip install 'trainlab[workspace]'")


def test_the_view_groups_by_the_axes_and_shows_accuracy_axes_and_layer_stats():
    from trainlab.report.workspace import study_workspace

    view = study_workspace(
        project="my-study", entity=None, group="train-2026-11-30", axes=["init", "seed", "norm"]
    )
    assert view.project == "my-study"
    assert [g.name for g in view.runset_settings.groupby] == ["init", "norm"]  # seeds are averaged
    assert "Group\") == 'train-2026-11-30'" in view.runset_settings.filters
    assert "JobType\") != 'report'" in view.runset_settings.filters
    sections = {s.name: s.panels for s in view.sections}
    assert list(sections) == ["Accuracy", "Study axes", "Layer statistics"]
    accuracy = {type(p).__name__: p for p in sections["Accuracy"]}
    assert accuracy["LinePlot"].y and accuracy["BarPlot"].metrics == ["test/acc"]
    assert [p.y for p in sections["Accuracy"] if type(p).__name__ == "LinePlot"] == [
        ["val/acc"],
        ["train/acc"],
    ]
    (parallel,) = sections["Study axes"]
    assert [c.metric.name for c in parallel.columns] == ["init", "norm", "val/acc"]
    assert [type(c.metric).__name__ for c in parallel.columns] == ["Config", "Config", "SummaryMetric"]
    assert [p.metric_regex for p in sections["Layer statistics"]] == [
        "layer_stats_act_std/.*",
        "layer_stats_grad_std/.*",
    ]
    view._to_model()  # what save() would send: it serialises without the network


def test_offline_the_command_prints_the_view_and_touches_no_network(tmp_path, monkeypatch, capsys):
    import wandb_workspaces.workspaces as ws

    def no_network(*args, **kwargs):
        raise AssertionError("the offline workspace command opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(ws.Workspace, "save", no_network)
    monkeypatch.setenv("WANDB_MODE", "offline")
    multirun = tmp_path / "logs" / "train" / "multiruns" / "2026-11-30_09-00-00"
    for num, (init, seed) in enumerate([("xavier_normal", 1), ("orthogonal", 1), ("xavier_normal", 2)]):
        job(multirun, num, [f"init={init}", f"seed={seed}"], 0.9 - num / 10)
    assert report_main([str(multirun), "--wandb-workspace"]) == 0
    out = capsys.readouterr().out
    assert "W&B view 'study train-2026-11-30_09-00-00' in <your W&B entity>/my-study" in out
    assert "grouped by: init\n" in out and "ParallelCoordinatesPlot over init, val/acc" in out
    assert "nothing saved" in out
