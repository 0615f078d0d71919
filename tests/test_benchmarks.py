"""The benchmark scripts run end to end on tiny settings and write their JSON (the figures
themselves are measured by running the scripts, never in a test; see BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

BENCH = REPO / "scripts" / "bench"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )


@pytest.mark.slow
def test_overhead_benchmark_alternates_runs_and_reports_median_ratios(tmp_path):
    out = tmp_path / "overhead.json"
    result = run_script(
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
    assert "Template overhead, model=mlp" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the benchmark really runs (minutes)")
def test_gpu_benchmark_says_it_needs_a_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_script("gpu.py", "--out", str(out))
    assert "skipped: no CUDA device" in result.stdout
    assert json.loads(out.read_text())["skipped"] == "no CUDA device"
