"""The study report's figures: one colour per option in every figure, points with their spread
over seeds (no bars on a cut axis), integer epochs, the seed count and the chance level shown,
nothing clipped; and each layer-statistics figure names its run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from trainlab.callbacks.layer_stats.plots import plot_against_depth
from trainlab.report.collect import chance_level, load_jobs, num_classes, varied_axes
from trainlab.report.plots import curves_by_axis, metric_by_axis, option_colours, write_plots

ACCS = {
    ("relu", 1): 0.90,
    ("relu", 2): 0.92,
    ("tanh", 1): 0.11,
    ("tanh", 2): 0.13,
    ("elu", 1): 0.8,
    ("elu", 2): 0.82,
}


def fake_study(root: Path, classes: int | None = 4) -> Path:
    """Six completed jobs (activation x seed), each with its summary, config and 3 epochs of curves."""
    for num, ((option, seed), acc) in enumerate(ACCS.items()):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / "csv").mkdir()
        overrides = [f"activation={option}", f"seed={seed}"]
        summary = {
            "status": "completed",
            "metrics": {"test/acc": acc, "val/acc": acc},
            "overrides": overrides,
        }
        (job / "summary.json").write_text(json.dumps(summary))
        data = {"classes": list(range(classes))} if classes else {"classes": None}
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"data": data}))
        rows = ["epoch,step,val/acc,train/loss_epoch"] + [
            f"{e},{e * 10},{acc - 0.1 * (2 - e)},{1 - acc}" for e in range(3)
        ]
        (job / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return root


def test_option_colours_are_fixed_by_the_sorted_option_names():
    colours = option_colours(["tanh", "relu", "elu", "relu"])
    assert list(colours) == ["elu", "relu", "tanh"]
    assert colours == option_colours(["relu", "elu", "tanh"])  # the order seen does not matter
    assert len(set(colours.values())) == 3
    assert list(option_colours(["10", "2", "1"])) == ["1", "2", "10"]  # numbers by value


def test_chance_level_from_the_jobs_config(tmp_path):
    jobs = load_jobs(fake_study(tmp_path))
    assert num_classes(tmp_path / "0") == 4
    assert chance_level(jobs) == pytest.approx(0.25)


def test_number_of_classes_from_the_checkpoint_when_the_config_does_not_tell(tmp_path):
    import torch

    fake_study(tmp_path, classes=None)
    (tmp_path / "0" / "checkpoints").mkdir()
    torch.save(
        {"hyper_parameters": {"network": {"num_classes": 7}}}, tmp_path / "0" / "checkpoints" / "last.ckpt"
    )
    assert num_classes(tmp_path / "0") == 7 and num_classes(tmp_path / "1") is None


def test_no_chance_level_when_the_jobs_do_not_tell(tmp_path):
    assert chance_level(load_jobs(fake_study(tmp_path, classes=None))) is None


def test_metric_figure_points_with_error_bars_colours_seeds_and_chance(tmp_path):
    jobs = load_jobs(fake_study(tmp_path))
    figure = metric_by_axis(jobs, "activation", [], "test/acc", chance=0.25)
    ax = figure.axes[0]
    assert not [p for p in ax.patches if isinstance(p, Rectangle)]  # no bars
    assert "2 seeds" in ax.get_title()
    colours = option_colours(jobs["activation"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["elu", "relu", "tanh"]
    means = [line for line in ax.lines if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert [to_rgba(m.get_color()) for m in means] == [colours[o] for o in ("elu", "relu", "tanh")]
    assert [float(m.get_ydata()[0]) for m in means] == pytest.approx([0.81, 0.91, 0.12])
    assert ax.collections  # the error bars (and the seeds' dots)
    chance = [line for line in ax.lines if list(line.get_ydata()) == [0.25, 0.25]]
    assert chance and chance[0].get_label() == "chance (1/4)"
    _assert_nothing_clipped(figure)


def test_curves_have_integer_epochs_option_colours_and_chance(tmp_path):
    jobs = load_jobs(fake_study(tmp_path))
    figure = curves_by_axis(jobs, "activation", "val/acc", chance=0.25, noun="seed")
    ax = figure.axes[0]
    figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert "mean over 2 seeds" in ax.get_title()
    thick = {line.get_label(): to_rgba(line.get_color()) for line in ax.lines if line.get_linewidth() > 2}
    assert thick == option_colours(["elu", "relu", "tanh"])
    assert any(list(line.get_ydata()) == [0.25, 0.25] for line in ax.lines)
    _assert_nothing_clipped(figure)


def test_no_chance_line_when_every_option_learned(tmp_path):
    jobs = load_jobs(fake_study(tmp_path))
    learned = jobs[jobs["activation"] != "tanh"]
    for figure in (
        metric_by_axis(learned, "activation", [], "test/acc", chance=0.1),
        curves_by_axis(learned, "activation", "val/acc", chance=0.1),  # its lowest point: 0.6
    ):
        assert not any(line.get_label().startswith("chance") for line in figure.axes[0].lines)


def test_write_plots_writes_the_report_and_curve_files(tmp_path):
    jobs = load_jobs(fake_study(tmp_path))
    written = write_plots(jobs, varied_axes(jobs), "test/acc", tmp_path)
    assert [p.name for p in written] == [
        "report_activation.png",
        "curves_val_acc_activation.png",
        "curves_train_loss_epoch_activation.png",
    ]


def test_layer_stats_figure_names_its_run(tmp_path, monkeypatch):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(
            [
                "data=digits",
                "model=mlp",
                "trainer.max_epochs=2",
                "init=zeros",
                "activation=tanh",
                "hydra.run.dir=/x",
            ]
        )
    )
    rows = [{"step": s, "depth": d, "stat": "act_std", "value": 1.0 + d} for s in (0, 5) for d in (1, 2)]
    saved = []
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", lambda figure, path, **kw: saved.append(figure))
    plot_against_depth(tmp_path, rows)
    title = saved[0].axes[0].get_title()
    assert "act_std against depth" in title and "init=zeros activation=tanh" in title.replace("\n", " ")
    assert "hydra" not in title  # where the run writes is not what it is
    _assert_nothing_clipped(saved[0])


def _assert_nothing_clipped(figure) -> None:
    """The title, the tick labels and every error bar lie inside the figure."""
    canvas = FigureCanvasAgg(figure)  # also for a Figure made without pyplot
    canvas.draw()
    renderer = canvas.get_renderer()
    box = figure.bbox
    ax = figure.axes[0]
    left, right = sorted(ax.get_xlim())
    shown = [t for t in ax.get_xticklabels() if left <= t.get_position()[0] <= right]  # drawn ticks
    for artist in [ax.title, *shown, ax.xaxis.label, ax.yaxis.label]:
        if artist.get_text():
            extent = artist.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, artist.get_text()
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, artist.get_text()
    low, high = ax.get_ylim()
    for line in ax.lines:
        if isinstance(line, Line2D) and line.get_marker() == "_":  # error bar caps
            assert all(low <= y <= high for y in line.get_ydata())
