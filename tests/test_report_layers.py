"""The study report's layer statistics against depth: a figure per statistic, a line per option of
the study's axis, mean over seeds with its min-max band, at init and at the end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from trainlab.report.collect import load_jobs, varied_axes
from trainlab.report.layer_plots import layer_figure
from trainlab.report.write import write_report

from conftest import QUIET, run_cli


def job_with_layer_stats(root: Path, num: int, overrides: list[str], values: dict[tuple, float]) -> Path:
    """A completed job whose layer_stats.csv holds `values`: (step, depth, stat) -> value."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    summary = {"status": "completed", "metrics": {"test/acc": 0.5}, "overrides": overrides}
    (job / "summary.json").write_text(json.dumps(summary))
    with (job / "layer_stats.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "layer", "depth", "stat", "value"])
        for (step, depth, stat), value in values.items():
            writer.writerow([step, f"blocks.{depth - 1}", depth, stat, value])
    return job


def test_a_line_per_option_mean_and_band_over_seeds_at_init_and_end(tmp_path):
    # act_std = scale * depth at step 0, twice that at step 10; seeds differ by 1
    for num, (init, seed, scale) in enumerate(
        [("he", 1, 1.0), ("he", 2, 1.0), ("xavier", 1, 0.5), ("xavier", 2, 0.5)]
    ):
        values = {
            (step, depth, "act_std"): scale * depth * (1 + step // 10) + seed
            for step in (0, 5, 10)
            for depth in (1, 2, 3)
        }
        job_with_layer_stats(tmp_path, num, [f"init={init}", f"seed={seed}"], values)
    report = write_report(tmp_path)
    path = tmp_path / "report_layers_act_std.png"
    assert path in report.files and path.stat().st_size > 10_000
    assert "report_layers_act_std.png" in (tmp_path / "report.md").read_text()
    jobs = load_jobs(tmp_path)
    series = layer_figure(jobs, varied_axes(jobs), "act_std", tmp_path / "again.png")
    assert set(series["option"]) == {"he", "xavier"} and set(series["when"]) == {"init", "end"}
    he_end = series[(series["option"] == "he") & (series["when"] == "end")].set_index("depth")
    # the mean over seeds 1 and 2 (values + 1 and + 2), the band their min and max
    assert he_end["mean"].tolist() == [2 * d + 1.5 for d in (1, 2, 3)]
    assert he_end["min"].tolist() == [2 * d + 1 for d in (1, 2, 3)]
    assert he_end["max"].tolist() == [2 * d + 2 for d in (1, 2, 3)]
    assert set(he_end["jobs"]) == {2} and set(he_end["steps"]) == {"10"}
    xavier_init = series[(series["option"] == "xavier") & (series["when"] == "init")]
    assert xavier_init.sort_values("depth")["mean"].tolist() == [0.5 * d + 1.5 for d in (1, 2, 3)]


def test_no_layer_stats_no_figure(tmp_path):
    for num, init in enumerate(["a", "b"]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        summary = {"status": "completed", "metrics": {"test/acc": 0.5}, "overrides": [f"init={init}"]}
        (job / "summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path)
    assert not list(tmp_path.glob("report_layers_*.png")) and not any(
        "report_layers" in p.name for p in report.files
    )
    assert "Layer statistics" not in (tmp_path / "report.md").read_text()


def test_job_figures_on_request_draw_each_jobs_own_from_its_csv(tmp_path):
    from trainlab.report.__main__ import main

    for num, seed in enumerate((1, 2)):
        values = {(step, depth, "act_std"): depth + step + seed for step in (0, 10) for depth in (1, 2, 3)}
        job_with_layer_stats(tmp_path, num, [f"seed={seed}"], values)
    assert main([str(tmp_path)]) == 0
    assert not list(tmp_path.glob("*/layer_stats_*.png"))  # the report alone draws none of them
    assert main([str(tmp_path), "--job-figures"]) == 0
    for num in (0, 1):
        figure = tmp_path / str(num) / "layer_stats_act_std.png"
        assert figure.is_file() and figure.stat().st_size > 5000


@pytest.mark.slow
def test_multirun_of_two_inits_and_two_seeds_draws_act_std_against_depth(tmp_path):
    result = run_cli(
        "trainlab.train", "-m", "data=digits", "model=mlp", "model.depth=6", "model.width=16", "norm=none",
        "activation=relu", "logger=csv", "data.train_size=256", "trainer.max_steps=4", "test=false",
        "callbacks.layer_stats.every_n_steps=2", "init=xavier_normal,kaiming_normal", "seed=1,2", *QUIET,
        f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    # the jobs leave their figures to the report (callbacks.layer_stats.plots=auto)
    assert list(sweep.glob("*/layer_stats.csv")) and not list(sweep.glob("*/layer_stats_*.png"))
    assert (sweep / "report_layers_act_std.png").is_file() and (
        sweep / "report_layers_grad_std.png"
    ).is_file()
    assert "report_layers_act_std.png" in (sweep / "report.md").read_text()
    jobs = load_jobs(sweep)
    series = layer_figure(jobs, varied_axes(jobs), "act_std", tmp_path / "act_std.png")
    assert sorted(series["option"].unique()) == ["kaiming_normal", "xavier_normal"]
    for (init, when), line in series.groupby(["option", "when"]):
        step = 0 if when == "init" else 2  # steps 0 and 2 sampled (the last of steps 0..3)
        frames = [pd.read_csv(Path(job) / "layer_stats.csv") for job in jobs[jobs["init"] == init]["path"]]
        per_seed = [f[(f["stat"] == "act_std") & (f["step"] == step)] for f in frames]
        assert len(per_seed) == 2
        expected = pd.concat(per_seed).groupby("depth")["value"].mean()
        assert line.set_index("depth")["mean"].to_numpy() == pytest.approx(expected.to_numpy())
        assert list(line["depth"]) == [1, 2, 3, 4, 5, 6]
    # He et al.: at init Xavier's act_std falls with depth in a ReLU net, He's holds
    init = series[series["when"] == "init"].set_index(["option", "depth"])["mean"]
    assert (
        init["xavier_normal"][6] / init["xavier_normal"][1]
        < init["kaiming_normal"][6] / init["kaiming_normal"][1]
    )
