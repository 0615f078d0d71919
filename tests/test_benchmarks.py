"""The benchmark scripts run end to end on tiny settings and write their JSON (the figures
themselves are measured by running the scripts, never in a test; see BENCHMARKS.md)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from conftest import REPO, run_cli

BENCH = REPO / "scripts" / "bench"


def run_script(name: str, *args: str) -> str:
    """`python <script> <args>` from scripts/bench, run as the module it is there; its stdout."""
    result = run_cli(name.removesuffix(".py"), *args, cwd=BENCH, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_overhead_benchmark_alternates_runs_and_reports_median_ratios(tmp_path):
    out = tmp_path / "overhead.json"
    stdout = run_script(
        "overhead.py", "--steps", "4", "--repeats", "2", "--model", "mlp", "--out", str(out), "data=digits"
    )
    report = json.loads(out.read_text())
    repeats, median = report["rows"][:-1], report["rows"][-1]
    assert [row["repeat"] for row in repeats] == ["0 (plain first)", "1 (trainlab first)"]
    assert median["repeat"] == "median" and report["machine"]["cores"] == os.cpu_count()
    for key in ("throughput ratio", "median-step ratio"):
        assert all(row[key] > 0 for row in repeats)
        assert median[key] == pytest.approx(sum(row[key] for row in repeats) / 2)
    assert report["median_throughput_ratio"] == median["throughput ratio"]
    assert "Template overhead, model=mlp" in stdout


@pytest.mark.slow
def test_host_bound_mode_runs_bare_lightning_and_lightnings_pieces_too(tmp_path):
    """`--mode host_bound`: the plain loop, bare Lightning, Lightning with the defaults' pieces
    (its loggers, checkpoints, LR monitor, self.log) and trainlab, with every ratio between them."""
    out = tmp_path / "overhead.json"
    run_script("overhead.py", "--mode", "host_bound", "--steps", "4", "--repeats", "1", "--out", str(out))
    report = json.loads(out.read_text())
    [row, median] = report["rows"]
    rates = {name: row[f"{name} steps/s"] for name in ("plain", "lightning", "pieces", "trainlab")}
    assert all(rate > 0 for rate in rates.values())
    assert row["trainlab / lightning"] == pytest.approx(rates["trainlab"] / rates["lightning"])
    assert row["pieces / lightning"] == pytest.approx(rates["pieces"] / rates["lightning"])
    assert row["trainlab / pieces"] == pytest.approx(rates["trainlab"] / rates["pieces"])
    assert report["median_trainlab_over_pieces"] == median["trainlab / pieces"]
    assert report["median_trainlab_over_lightning"] == median["trainlab / lightning"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the benchmark really runs (minutes)")
def test_gpu_benchmark_says_it_needs_a_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    stdout = run_script("gpu.py", "--out", str(out))
    assert "skipped: no CUDA device" in stdout
    assert json.loads(out.read_text())["skipped"] == "no CUDA device"


@pytest.mark.slow
def test_gpu_benchmark_code_path_runs_on_cpu(tmp_path):
    """`--accelerator cpu`: the whole GPU benchmark (timm resnet18 on synthetic images, bf16
    mixed precision, channels-last, trainlab against the plain loop, and the probes: the same
    network on data already on the device, the loader alone) runs before it gets a GPU."""
    out = tmp_path / "gpu.json"
    stdout = run_script(
        "gpu.py", "--accelerator", "cpu", "--sizes", "32", "--batch-size", "4", "--steps", "2",
        "--repeats", "1", "--workers", "0", "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["accelerator"] == "cpu"
    [row] = report["rows"]
    assert row["size"] == 32 and row["compile"] is False
    assert row["plain img/s"] > 0 and row["trainlab img/s"] > 0 and row["ratio"] > 0
    assert row["GPU-resident limit img/s"] > 0 and row["loader alone img/s (0 workers)"] > 0
    assert row["trainlab / limit"] == pytest.approx(row["trainlab img/s"] / row["GPU-resident limit img/s"])
    assert "CPU: a check of the script, not a GPU figure" in stdout


@pytest.mark.slow
def test_layer_stats_benchmark_reports_a_sample_cost_with_and_without_histograms(tmp_path):
    """The script runs and writes one well-formed row per setting. The figures are timings of a
    loaded machine: each must be a finite number, and each time spent inside a hook cannot be
    negative; "extra ms per sample" is a difference of two timings (hooked minus bare step), so
    noise can make it negative, and no test compares one timing with another."""
    out = tmp_path / "layer_stats.json"
    run_script("layer_stats.py", "--repeats", "2", "--out", str(out), "data=digits", "model=mlp")
    rows = json.loads(out.read_text())["rows"]
    assert [row["W&B histograms"] for row in rows] == [True, False]
    hook_keys = [
        f"{hook} ms" for hook in ("before_activation", "after_activation", "on_gradient", "histogram")
    ]
    for row in rows:
        assert set(row) == {"W&B histograms", "layers", "extra ms per sample", *hook_keys}
        assert row["layers"] == 2  # the MLP's two hidden layers
        assert all(math.isfinite(row[key]) for key in ("extra ms per sample", *hook_keys))
        assert all(row[key] >= 0 for key in hook_keys)


@pytest.mark.slow
def test_study_overhead_benchmark_reports_per_job_cost_ratio_first_step_and_phases(tmp_path):
    out = tmp_path / "study_overhead.json"
    stdout = run_script(
        "study_overhead.py", "--repeats", "1", "--seeds", "1", "2", "--phases", "--out", str(out),
        "trainer.max_epochs=1",
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert [row["way"] for row in report["studies"]] == ["plain", "trainlab", "trainlab lean"]
    for row in report["studies"]:
        assert row["1 seed(s) s"] > 0 and row["2 seeds s"] > 0 and math.isfinite(row["per extra job s"])
        if row["way"] != "plain":
            assert row["2 seeds / plain"] == pytest.approx(
                row["2 seeds s"] / report["studies"][0]["2 seeds s"]
            )
    assert [len(v) for w in report["times"].values() for v in w.values()] == [1] * 6
    first_steps = {row["first training step of"]: row["median s"] for row in report["first_step"]}
    assert len(first_steps) == 3 and all(s > 0 for s in first_steps.values())
    phases = {row["phase"]: row for row in report["phases"]}
    assert (
        phases["fit"]["later jobs s"] > 0
        and phases["whole job (its start to the next job's start)"]["first job s"] > 0
    )
    assert report["targets"] == {"marginal_over_plain_s": 0.7, "first_step_s": 4.0, "study_ratio": 2.5}
    assert "Where a job's time goes" in stdout


def test_device_checks_plan_names_every_step_and_its_gpu_command(tmp_path):
    """`--dry-run` prints each check of the prepared device command and runs none of them."""
    stdout = run_script("device_checks.py", "--dry-run", "--out-dir", str(tmp_path))
    for step in ("host_sync", "vectorised_64", "gpu_32_eager", "vectorised_study", "gpu_224", "loader_224"):
        assert f"# {step} (~" in stdout
    commands = [line for line in stdout.splitlines() if not line.startswith("#")]
    assert commands and all("cuda" in c or "gpu" in c for c in commands)
    assert not list(tmp_path.glob("*.log"))


def test_device_checks_leave_out_what_the_budget_cannot_hold(tmp_path):
    """A step starts only when the budget left holds its estimate; the table says which were left
    out and prints the command that runs them."""
    stdout = run_script(
        "device_checks.py",
        "--cpu-smoke",
        "--budget-s",
        "0",
        "--only",
        "host_sync",
        "--out-dir",
        str(tmp_path),
    )
    [row] = json.loads((tmp_path / "device_checks.json").read_text())["steps"]
    assert row["step"] == "host_sync" and row["outcome"].startswith("left out")
    assert "--only host_sync" in stdout and not (tmp_path / "host_sync.log").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the checks really run")
def test_device_checks_refuse_to_run_without_a_gpu(tmp_path):
    result = run_cli("device_checks", "--out-dir", str(tmp_path), cwd=BENCH)
    assert result.returncode == 2 and "no CUDA device here" in result.stderr


@pytest.mark.slow
def test_device_checks_commands_all_work_at_cpu_settings(tmp_path):
    """`--cpu-smoke`: every step's command (the GPU ones at tiny CPU settings) runs and passes,
    each with its log, so that the prepared device command is known to work before device time."""
    run_script("device_checks.py", "--cpu-smoke", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "device_checks.json").read_text())
    assert report["cpu_smoke"] is True
    outcomes = {row["step"]: row["outcome"] for row in report["steps"]}
    assert len(outcomes) == 8 and set(outcomes.values()) == {"passed"}, outcomes
    assert all((tmp_path / f"{step}.log").stat().st_size > 0 for step in outcomes)
    assert json.loads((tmp_path / "vectorised_64.json").read_text())["rows"]


@pytest.mark.slow
def test_dataloader_benchmark_reports_a_ready_batchs_cost_to_the_training_process(tmp_path):
    """`--main-side`: taking a ready batch from a worker, reading it and letting it go, in ms,
    and the batches per second they allow (their sum's inverse)."""
    out = tmp_path / "dataloader.json"
    stdout = run_script(
        "dataloader.py", "--no-model", "--main-side", "--workers", "1", "--augment", "none", "--epochs", "1",
        "--out", str(out), "data=synthetic", "data.source.image_size=32", "data.source.num_images=256",
        "data.batch_size=8",
    )  # fmt: skip
    [row] = json.loads(out.read_text())["main_side"]
    costs = [row[f"{name} ms"] for name in ("take", "read", "let go")]
    assert row["workers"] == 1 and all(math.isfinite(c) and c >= 0 for c in costs)
    assert row["batches/s at most"] == pytest.approx(1000 / sum(costs))
    assert "cost to the training process" in stdout
