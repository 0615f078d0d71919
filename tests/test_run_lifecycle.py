"""A run's record from start to end: `running` at once, `killed` when its process dies,
interrupts during validation, SIGTERM (exit code, multirun report), skip_completed, SLURM."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.report.collect import STATUS_FAILED, load_jobs
from trainlab.report.hydra_callback import MultirunReport
from trainlab.train import train

from conftest import QUIET, compose_config, read_summary

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv"]
TESTS = Path(__file__).resolve().parent


def write_summary(job: Path, **fields) -> None:
    job.mkdir(parents=True, exist_ok=True)
    (job / "summary.json").write_text(json.dumps({"overrides": [], "metrics": {}, **fields}))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_running_summary_whose_process_is_gone_reads_as_killed(tmp_path):
    host = socket.gethostname()
    write_summary(tmp_path / "0", status="running", pid=dead_pid(), hostname=host)
    write_summary(tmp_path / "1", status="running", pid=os.getpid(), hostname=host)
    write_summary(tmp_path / "2", status="running", pid=dead_pid(), hostname=f"not-{host}")  # can't tell
    write_summary(tmp_path / "3", status="completed", pid=dead_pid(), hostname=host)
    assert list(load_jobs(tmp_path)["status"]) == ["killed", "running", "running", "completed"]
    assert "killed" in STATUS_FAILED


def test_the_summary_says_running_from_the_start(make_cfg, tmp_path, monkeypatch):
    """Before anything is built the record says `running`, with the process to check it by: a
    SIGKILL then leaves a record that the report reads as `killed`."""
    from trainlab.models.classifier import Classifier

    seen = {}

    def look_at_the_file(self):
        seen.update(summary=read_summary(tmp_path / "run"), jobs=load_jobs(tmp_path))

    monkeypatch.setattr(Classifier, "on_train_start", look_at_the_file, raising=False)
    train(make_cfg(*TINY, "trainer.max_epochs=1"))
    assert seen["summary"]["status"] == "running" and seen["summary"]["pid"] == os.getpid()
    assert seen["summary"]["hostname"] == socket.gethostname() and seen["summary"]["updated_at"]
    assert list(seen["jobs"]["status"]) == ["running"]  # alive: this process


def test_a_new_attempt_beside_a_completed_run_is_recorded_apart_until_it_completes(
    make_cfg, tmp_path, monkeypatch
):
    """A re-run in a directory whose run completed says `running` in attempts/<start>/, not over
    the completed record; once it completes, its record is the run's and the earlier one moves
    to attempts/<the earlier start>/."""
    first = train(make_cfg(*TINY, "trainer.max_epochs=1"))
    completed = (tmp_path / "run" / "summary.json").read_bytes()
    from trainlab.models.classifier import Classifier

    seen = {}

    def look_at_the_files(self):
        (attempt,) = (tmp_path / "run" / "attempts").iterdir()
        seen.update(attempt=read_summary(attempt), run=(tmp_path / "run" / "summary.json").read_bytes())

    monkeypatch.setattr(Classifier, "on_train_start", look_at_the_files, raising=False)
    second = train(make_cfg(*TINY, "trainer.max_epochs=1"))
    assert seen["run"] == completed  # the completed record, untouched while the attempt runs
    assert seen["attempt"]["status"] == "running" and seen["attempt"]["pid"] == os.getpid()
    assert read_summary(tmp_path / "run") == second and second["status"] == "completed"
    (earlier,) = (tmp_path / "run" / "attempts").iterdir()
    assert (earlier / "summary.json").read_bytes() == completed
    assert earlier.name == first["started_at"].replace(":", "-")
    assert (earlier / "config_tree.log").is_file() and (tmp_path / "run" / "config_tree.log").is_file()
    assert list(load_jobs(tmp_path)["status"]) == ["completed"]  # the run, once


def test_heartbeat_refreshes_the_summary_at_each_epoch_end(make_cfg, tmp_path, monkeypatch):
    from trainlab.models.classifier import Classifier

    seen = []
    monkeypatch.setattr(
        Classifier,
        "on_train_epoch_start",
        lambda self: seen.append(read_summary(tmp_path / "run")),
        raising=False,
    )
    train(make_cfg(*TINY, "trainer.max_epochs=3"))
    assert [(s["status"], s["global_step"], s["epochs"]) for s in seen] == [
        ("running", 0, 0),
        ("running", 21, 1),
        ("running", 42, 2),
    ]
    assert "val/acc" in seen[-1]["metrics"]


def test_interrupt_during_validation_saves_last_and_resumes_to_the_same_step(make_cfg, tmp_path, monkeypatch):
    from trainlab.models.classifier import Classifier

    def interrupt_in_epoch_1_validation(self, outputs, batch, batch_idx, dataloader_idx=0):
        if self.trainer.current_epoch == 1 and not self.trainer.sanity_checking and batch_idx == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Classifier, "on_validation_batch_end", interrupt_in_epoch_1_validation, raising=False)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(make_cfg(*TINY, "trainer.max_epochs=3", "seed=0"))
    assert read_summary(tmp_path / "run")["status"] == "interrupted"
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 42  # both training epochs done; before: the epoch-0 checkpoint (21)
    monkeypatch.undo()

    resumed = train(make_cfg(*TINY, "trainer.max_epochs=3", "seed=0", "ckpt_path=last"))
    assert resumed["status"] == "completed" and resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["global_step"] == 63 and resumed["epochs"] == 3  # none skipped, none repeated
    assert "val/acc" in resumed["metrics"]
    # a redone epoch 1 would end at 84 (epochs 1 and 2 after the restored 42), a skipped one at 42


def test_skip_completed_looks_in_a_run_directory_outside_logs(tmp_path, caplog):
    elsewhere, logs = tmp_path / "scratch" / "study", tmp_path / "logs"
    overrides = [*QUIET, *TINY, "trainer.max_epochs=1", "seed=5"]
    first = train(compose_config(overrides, elsewhere / "0", log_dir=logs))
    assert first["status"] == "completed"
    with caplog.at_level(logging.INFO, logger="trainlab.run.lifecycle"):
        again = train(compose_config([*overrides, "skip_completed=true"], elsewhere / "0", log_dir=logs))
    assert again["skipped"] and again["completed_in"] == str(elsewhere / "0")
    assert f"already completed in {elsewhere / '0'}" in caplog.text
    # a new directory, told where the earlier study is
    other = train(
        compose_config([*overrides, f"skip_completed={elsewhere}"], tmp_path / "new" / "0", log_dir=logs)
    )
    assert other["skipped"] and other["metrics"] == first["metrics"]
    assert not (tmp_path / "new" / "0" / "checkpoints").exists()


def test_the_multirun_end_says_how_many_jobs_were_skipped(tmp_path, caplog):
    for num in range(3):
        write_summary(tmp_path / str(num), status="completed", overrides=[f"seed={num}"])
    for num in (0, 2):
        summary = read_summary(tmp_path / str(num))
        write_summary(tmp_path / str(num), **{**summary, "skipped": True, "completed_in": "/old/study/1"})
    with caplog.at_level(logging.INFO, logger="trainlab.report.hydra_callback"):
        MultirunReport(enabled=False).finish(tmp_path)
    assert "skipped 2 of 3 jobs (already completed in /old/study/1)" in caplog.text


def test_the_multirun_verdict_is_the_exit_status(tmp_path):
    """When the sweep ends (in the launching process, whichever the launcher), the report callback
    ends the process with status 1 if a job did not complete; Hydra returns nothing to `main`."""
    sweep = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    write_summary(tmp_path / "0", status="completed", overrides=["seed=0"])
    MultirunReport(enabled=False).on_multirun_end(sweep)  # all completed: no exit
    write_summary(tmp_path / "1", status="diverged", overrides=["seed=1"])
    with pytest.raises(SystemExit) as exit_:
        MultirunReport(enabled=False).on_multirun_end(sweep)
    assert exit_.value.code == 1
    assert MultirunReport(enabled=False).finish(tmp_path) == [str(tmp_path / "1")]


def test_slurm_trainer_and_launcher_configs(tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from trainlab import builders, checks
    from trainlab.checkpoints.atomic_io import AtomicCheckpointIO

    cfg = compose_config([*TINY, "trainer=slurm", "hydra/launcher=slurm"], tmp_path / "run")
    assert cfg.hydra.launcher.additional_parameters.signal == "USR1@90"
    (plugin,) = [instantiate(p) for p in cfg.trainer.plugins]
    assert isinstance(plugin, SLURMEnvironment)
    assert plugin.auto_requeue and plugin.requeue_signal == signal.SIGUSR1
    checks.check_config(cfg)  # the trainer's arguments, plugins included, pass the checks
    # the trainer gets the SLURM environment and keeps trainlab's atomic checkpoint writes
    trainer = builders.build_trainer(OmegaConf.merge(cfg, {"trainer": {"accelerator": "cpu"}}), [], [])
    assert isinstance(trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_slurm_submission_script_asks_for_the_resources_and_the_preemption_signal(tmp_path, monkeypatch):
    """hydra/launcher=slurm without a cluster: the real submitit launcher builds its sbatch script
    (a stand-in `srun` satisfies submitit's check; submitting is stopped before `sbatch`)."""
    import submitit
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    sweep = tmp_path / "sweep"
    cfg = compose_config(
        [
            *TINY, "trainer=slurm", "trainer.num_nodes=2", "trainer.devices=4", "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
            "hydra.launcher.gpus_per_node=4", f"hydra.sweep.dir={sweep}",
        ],
        tmp_path / "run",
    )  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    scripts = []

    class Submitted(Exception):
        pass

    def write_instead_of_submitting(executor, function, *arguments):
        scripts.append(executor._executor._make_submission_file_text("python -m trainlab.train", "0"))
        raise Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", write_instead_of_submitting)
    with pytest.raises(Submitted):
        launcher.launch([["seed=1"]], initial_job_idx=0)
    sbatch = {line.removeprefix("#SBATCH ") for line in scripts[0].splitlines() if line.startswith("#SBATCH")}
    assert {
        "--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8",
        "--mem=32GB", "--time=240", "--signal=USR1@90",
    } <= sbatch  # fmt: skip
    assert not any("USR2" in line for line in sbatch)  # submitit's own resubmitting signal is replaced
    assert f"--output={sweep}/.submitit/%j/%j_0_log.out" in sbatch
    # the trainer on the job's side: Lightning's SLURM environment requeues on that signal
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 4


# ----- subprocesses: real signals ---------------------------------------------------------------


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "trainlab.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) before the signal:\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting")
        time.sleep(0.05)


def status_is(run: Path, status: str) -> bool:
    try:
        return read_summary(run)["status"] == status
    except (OSError, ValueError):
        return False


def training_has_stepped(run: Path) -> bool:
    """summary.json says running and the first epoch's checkpoint exists: steps have run."""
    return status_is(run, "running") and (run / "checkpoints" / "last.ckpt").is_file()


LONG_RUN = [*TINY, *QUIET, "trainer.max_epochs=1000", "data.train_size=256"]


@pytest.mark.slow
def test_sigkill_leaves_running_which_the_report_reads_as_killed(tmp_path):
    run = tmp_path / "study" / "0"
    process = start_cli(*LONG_RUN, f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    wait_for(lambda: training_has_stepped(run), process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    summary = read_summary(run)
    assert summary["status"] == "running" and summary["pid"] == process.pid
    assert list(load_jobs(tmp_path / "study")["status"]) == ["killed"]


@pytest.mark.slow
def test_sigterm_saves_last_marks_interrupted_and_exits_non_zero(tmp_path):
    run = tmp_path / "run"
    process = start_cli(*LONG_RUN, f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    wait_for(lambda: training_has_stepped(run), process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["error"] is None
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == summary["global_step"] > 0  # saved at the step it stopped


@pytest.mark.slow
def test_sigterm_stops_a_multirun_and_the_relaunch_resumes_it(tmp_path):
    """3 jobs, SIGTERM during job 1: job 0 completed, job 1 interrupted, no job 2, a report,
    a non-zero exit. The same command with skip_completed=true skips job 0, resumes job 1 from
    its last.ckpt and runs job 2. The sweep directory is outside paths.log_dir."""
    sweep, gate = tmp_path / "study", tmp_path / "gate"
    gate.mkdir()
    (gate / "1").touch()  # job 1 trains slowly until the re-launch
    command = [
        "-m", *TINY, *QUIET, "trainer.max_epochs=4", "data.train_size=256", "seed=0,1,2",
        "callbacks.layer_stats.plots=false", "+callbacks.throttle._target_=throttle_callback.Throttle",
        f"+callbacks.throttle.gate={gate}", "+callbacks.throttle.seconds=0.5",
        f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    process = start_cli(*command, cwd=tmp_path)
    wait_for(lambda: training_has_stepped(sweep / "1"), process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert read_summary(sweep / "0")["status"] == "completed"
    assert read_summary(sweep / "1")["status"] == "interrupted"
    interrupted_at = torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert not (sweep / "2").exists()
    report = (sweep / "report.md").read_text()
    assert "**interrupted**" in report

    (gate / "1").unlink()
    relaunch = start_cli(*command, "skip_completed=true", cwd=tmp_path)
    output = relaunch.communicate(timeout=300)[0]
    assert relaunch.returncode == 0, output[-3000:]
    summaries = [read_summary(sweep / str(n)) for n in range(3)]
    assert [s["status"] for s in summaries] == ["completed"] * 3
    assert summaries[0]["skipped"] and not summaries[2].get("skipped")
    assert summaries[1]["resumed_from"] == str(sweep / "1" / "checkpoints" / "last.ckpt")
    assert summaries[1]["global_step"] == summaries[2]["global_step"] == 4 * 4 > interrupted_at
    assert "skipped 1 of 3 jobs (already completed in" in output


STOP_BETWEEN_JOBS = """
import os, signal, sys
import hydra.core.utils
from trainlab.train import main

saves, save = [], hydra.core.utils._save_config
def save_then_stop(*args, **kwargs):  # Hydra saves 3 files per job before the job starts
    saves.append(1)
    if len(saves) == 4:  # the second job's first: between the jobs
        os.kill(os.getpid(), signal.SIGTERM)
    return save(*args, **kwargs)
hydra.core.utils._save_config = save_then_stop
sys.argv = ["trainlab.train", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_sigterm_between_multirun_jobs_still_writes_the_report_of_the_jobs_so_far(tmp_path):
    """SIGTERM while Hydra prepares the next job (outside any job) stops the multirun with 143,
    and the jobs that ran are reported, as when the stop lands inside a job."""
    script = tmp_path / "stop_between_jobs.py"
    script.write_text(STOP_BETWEEN_JOBS)
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, str(script), "-m", "seed=1,2,3", *TINY, *QUIET, "trainer.max_epochs=1",
         f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert read_summary(sweep / "0")["status"] == "completed"
    assert not (sweep / "1" / "summary.json").exists() and not (sweep / "2").exists()
    assert "Multirun stopped: no further jobs start" in result.stdout + result.stderr
    assert (sweep / "report.md").is_file() and (sweep / "report.csv").is_file()


def test_other_ranks_resume_the_checkpoint_rank_zero_resumes(make_cfg, tmp_path, monkeypatch):
    """Rank 0 writes the `running` record (with resumed_from) before the other processes of a
    multi-device run start; they read it rather than write their own and resume the same file."""
    from lightning.pytorch.utilities import rank_zero_only

    train(make_cfg(*TINY, "trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    write_summary(tmp_path / "run", status="running", pid=os.getpid(), resumed_from=str(last))
    from trainlab.models.classifier import Classifier

    steps, original = [], Classifier.training_step
    monkeypatch.setattr(Classifier, "training_step", lambda self, *a: steps.append(1) or original(self, *a))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    summary = train(make_cfg(*TINY, "trainer.max_epochs=2", "skip_completed=true"))
    assert summary["resumed_from"] == str(last) and summary["global_step"] == 42
    assert len(steps) == 21  # only the second epoch was trained


def test_sigterm_before_training_stops_at_once_with_exit_code_143(make_cfg, tmp_path, monkeypatch):
    """Outside fit and test Lightning has no SIGTERM handler: the entry point's handler raises."""
    import trainlab.builders as builders
    from trainlab.run.stop import raise_on_sigterm

    def terminated_while_loading(cfg):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        pytest.fail("SIGTERM did not stop the run")

    monkeypatch.setattr(builders, "build_datamodule", terminated_while_loading)
    previous = signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        with pytest.raises(SystemExit) as stop:
            train(make_cfg(*TINY))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stop.value.code == 128 + signal.SIGTERM
    assert read_summary(tmp_path / "run")["status"] == "interrupted"
