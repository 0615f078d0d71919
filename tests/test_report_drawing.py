"""The study report's figures drawn side by side in forked processes (trainlab.report.drawing):
the same files as drawn one after another, every figure drawn when a worker dies, a task's error
raised to the caller."""

from __future__ import annotations

import os
import sys

import pytest

from trainlab.report import drawing
from trainlab.report.drawing import MAX_WORKERS, draw_all, workers_for
from trainlab.report.write import write_report

from test_report_layers import job_with_layer_stats

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="workers are forked on Linux only"
)


@pytest.fixture
def two_cpus(monkeypatch):
    """Two usable CPUs, whatever this machine has: draw_all forks two workers."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


@linux_only
def test_tasks_run_in_worker_processes_and_results_keep_their_order(two_cpus):
    tasks = [lambda i=i: (i, os.getpid()) for i in range(6)]
    results = draw_all(tasks)
    assert [index for index, _ in results] == list(range(6))
    assert os.getpid() not in {pid for _, pid in results}


@linux_only
def test_a_tasks_error_is_raised_to_the_caller(two_cpus):
    def fails():
        raise ValueError("no such statistic: act_sdt")

    with pytest.raises(ValueError, match="act_sdt"):
        draw_all([lambda: 1, fails])


@linux_only
def test_every_figure_is_drawn_here_when_a_worker_dies(two_cpus, caplog):
    parent = os.getpid()

    def dies_in_a_worker():
        if os.getpid() != parent:
            os._exit(1)  # as a worker killed for memory would
        return "drawn here"

    with caplog.at_level("WARNING", logger=drawing.__name__):
        results = draw_all([lambda: "first", dies_in_a_worker, lambda: "third"])
    assert results == ["first", "drawn here", "third"]
    assert "drawing them here" in caplog.text


def test_workers_one_per_cpu_and_task_on_linux_only(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert workers_for(1) == 1 and workers_for(3) == 3 and workers_for(100) == MAX_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert workers_for(9) == 1
    for platform in ("darwin", "win32"):
        monkeypatch.setattr(sys, "platform", platform)
        assert workers_for(9) == 1


@linux_only
def test_a_pools_worker_draws_its_figures_itself(two_cpus):
    """A daemonic process (a multiprocessing pool's worker) may not start processes."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(workers_for, (9,)) == 1
        assert pool.apply(draw_all, ([int, float],)) == [0, 0.0]


@linux_only
def test_a_report_drawn_in_parallel_writes_the_files_drawn_one_by_one(tmp_path, two_cpus, monkeypatch):
    """A study with an axis (init) and layer statistics: its curves, metric and layer figures
    are byte for byte those drawn in this process one after another."""
    stats = ("act_std", "grad_std", "dead")
    for num, (init, seed) in enumerate([("he", 1), ("he", 2), ("xavier", 1), ("xavier", 2)]):
        values = {
            (step, depth, stat): (1 + depth) * (1 + step) * (2 if init == "he" else 1) + seed + k
            for step in (0, 10)
            for depth in (1, 2, 3)
            for k, stat in enumerate(stats)
        }
        job_with_layer_stats(tmp_path / "study", num, [f"init={init}", f"seed={seed}"], values)
    parallel = write_report(tmp_path / "study")
    drawn = {path.name: path.read_bytes() for path in parallel.files if path.suffix == ".png"}
    assert {f"report_layers_{stat}.png" for stat in stats} | {"report_init.png"} <= set(drawn)
    monkeypatch.setattr(drawing, "workers_for", lambda count: 1)
    serial = write_report(tmp_path / "study")
    assert [path.name for path in serial.files] == [path.name for path in parallel.files]
    assert {path.name: path.read_bytes() for path in serial.files if path.suffix == ".png"} == drawn
