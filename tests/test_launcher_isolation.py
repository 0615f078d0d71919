"""Failure isolation under the launchers that run jobs in worker processes (joblib, submitit_local):
a job killed by the OS is recorded `killed`, its siblings finish, the report is written, exit 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trainlab.report.collect import load_jobs
from trainlab.run.isolation import JobInChildProcess

from conftest import compose_config, read_summary

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv"]
QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_model_summary=false"]
TESTS = Path(__file__).resolve().parent


# ----- the wrapper, in this process ------------------------------------------------------------


def _job_config(run_dir: Path):
    return OmegaConf.create({"paths": {"output_dir": str(run_dir)}})


def _write_running_then_kill(cfg) -> None:
    path = Path(cfg.paths.output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"status": "running", "metrics": {}, "overrides": ["seed=3"], "pid": os.getpid()}
    path.write_text(json.dumps(record))
    os.kill(os.getpid(), signal.SIGKILL)


def _return_pid(cfg) -> int:
    return os.getpid()


def _interrupt(cfg) -> None:
    raise KeyboardInterrupt


def test_a_job_killed_by_sigkill_is_recorded_killed_and_its_caller_goes_on(tmp_path):
    run = tmp_path / "job"
    returned = JobInChildProcess(_write_running_then_kill)(_job_config(run))
    assert returned is None  # no exception: the sweep goes on
    summary = read_summary(run)
    assert summary["status"] == "killed" and summary["overrides"] == ["seed=3"]
    assert summary["pid"] != os.getpid()  # the job ran in a child
    assert "killed by SIGKILL" in summary["error"] and "out-of-memory" in summary["error"]
    assert summary["finished_at"]


def test_a_killed_job_whose_forked_processes_hold_the_pipe_is_recorded_at_once(tmp_path):
    """A data loader worker forked by the job outlives it for a while: its end is what counts."""

    def fork_then_kill(cfg) -> None:
        worker = os.fork()
        if worker == 0:  # holds the job's end of the pipe, like a data loader worker
            time.sleep(60)
            os._exit(0)
        (tmp_path / "worker").write_text(str(worker))
        os.kill(os.getpid(), signal.SIGKILL)

    start = time.monotonic()
    try:
        JobInChildProcess(fork_then_kill)(_job_config(tmp_path / "job"))
        assert time.monotonic() - start < 30
    finally:
        os.kill(int((tmp_path / "worker").read_text()), signal.SIGKILL)
    assert read_summary(tmp_path / "job")["status"] == "killed"


def test_a_job_that_ends_normally_returns_its_value_from_a_child_process(tmp_path):
    assert JobInChildProcess(_return_pid)(_job_config(tmp_path / "job")) != os.getpid()
    assert not (tmp_path / "job" / "summary.json").exists()  # nothing recorded for it


def test_ctrl_c_in_the_job_stops_its_caller_too(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        JobInChildProcess(_interrupt)(_job_config(tmp_path / "job"))


def test_an_outcome_written_before_the_kill_is_kept(tmp_path):
    def complete_then_kill(cfg) -> None:
        (tmp_path / "job").mkdir()
        (tmp_path / "job" / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
        os.kill(os.getpid(), signal.SIGKILL)

    JobInChildProcess(complete_then_kill)(_job_config(tmp_path / "job"))
    assert read_summary(tmp_path / "job")["status"] == "completed"


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_the_launcher_names_select_trainlabs_isolating_launchers(tmp_path, launcher):
    cfg = compose_config([f"hydra/launcher={launcher}"], tmp_path / "run")
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.trainlab_launchers.")
    assert cfg.hydra.launcher.isolate_jobs is True
    assert "trainlab.builders" in cfg.hydra.launcher.preload


# ----- the real launchers, in subprocesses ------------------------------------------------------


def _run_study(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Three jobs, job 1 killed by SIGKILL before its 5th step (tests/kill_callback.py)."""
    sweep = tmp_path / "sweep"
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable, "-m", "trainlab.train", "-m", *args, *TINY, *QUIET, "trainer.max_epochs=2",
        "data.train_size=512", "seed=0,1,2", "+callbacks.kill._target_=kill_callback.KillAt",
        "+callbacks.kill.job=1", "+callbacks.kill.step=4", f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    return result, sweep


def _assert_killed_and_siblings_finished(result: subprocess.CompletedProcess, sweep: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]  # a job did not complete
    assert "Traceback" not in output, output[-3000:]
    statuses = [read_summary(sweep / str(job))["status"] for job in range(3)]
    assert statuses == ["completed", "killed", "completed"]
    killed = read_summary(sweep / "1")
    assert "killed by SIGKILL" in killed["error"]
    assert list(load_jobs(sweep)["status"]) == statuses
    assert "**killed**" in (sweep / "report.md").read_text()
    assert "1 of 3 jobs did not complete" in output


@pytest.mark.slow
def test_kill_9_of_one_joblib_job_leaves_its_siblings_and_the_report(tmp_path):
    """Two workers, three jobs: the worker whose job is killed survives and runs the third job."""
    result, sweep = _run_study(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    _assert_killed_and_siblings_finished(result, sweep)


@pytest.mark.slow
def test_kill_9_of_one_submitit_local_job_leaves_its_siblings_and_the_report(tmp_path):
    result, sweep = _run_study(tmp_path, "hydra/launcher=submitit_local")
    _assert_killed_and_siblings_finished(result, sweep)
