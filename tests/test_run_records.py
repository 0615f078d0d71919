"""Records that survive misuse: one writer per run directory, no file written through a link, no
record destroyed by a failed attempt, no orphaned temporary checkpoint, the root cause of an
error, and Lightning's launcher functions back after a job of a multirun."""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trainlab.run.lock import RunDirectoryBusy, RunDirectoryLock
from trainlab.run.summary import describe_error
from trainlab.train import train

from conftest import QUIET, read_summary

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv", "trainer.max_epochs=1"]
SRC = Path(__file__).resolve().parents[1] / "src"

HOLD_THE_LOCK = """
import os, sys, time
from pathlib import Path
from trainlab.run.lock import RunDirectoryLock
with RunDirectoryLock(Path(sys.argv[1])) as held:
    if len(sys.argv) > 2:  # pretend to be what a dead run left: its pid recorded, the flock still held
        os.ftruncate(held._descriptor, 0)
        os.pwrite(held._descriptor, f"pid={sys.argv[2]}\\nhost={sys.argv[3]}\\n".encode(), 0)
    print("held", flush=True)
    time.sleep(120)
"""


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def lock_held_elsewhere(tmp_path):
    """hold(run_dir, *recorded): another process holds run_dir's lock (recording pid, host)."""
    script = tmp_path / "hold_the_lock.py"
    script.write_text(HOLD_THE_LOCK)
    holders = []

    def hold(run_dir: Path, *recorded: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        holder = subprocess.Popen(
            [sys.executable, str(script), str(run_dir), *recorded], stdout=subprocess.PIPE, text=True, env=env
        )
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


# ----- one writer per run directory ---------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path, lock_held_elsewhere):
    holder = lock_held_elsewhere(tmp_path / "run")
    with pytest.raises(RunDirectoryBusy) as busy, RunDirectoryLock(tmp_path / "run"):
        pytest.fail("two writers")
    assert f"process {holder.pid} on host {socket.gethostname()}" in str(busy.value)
    assert str(tmp_path / "run") in str(busy.value)


def test_the_lock_of_a_process_that_is_gone_is_taken_over(tmp_path, lock_held_elsewhere):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(f"pid={dead_pid()}\nhost={socket.gethostname()}\n")
    with RunDirectoryLock(tmp_path / "run"):  # the kernel released the dead process's flock
        assert f"pid={os.getpid()}\n" in (tmp_path / "run" / ".lock").read_text()
    # a child of a dead run (a data-loader worker) still holds the file: it is replaced
    lock_held_elsewhere(tmp_path / "other", str(dead_pid()), socket.gethostname())
    with RunDirectoryLock(tmp_path / "other"):
        assert f"pid={os.getpid()}\n" in (tmp_path / "other" / ".lock").read_text()
    # a live holder on another host cannot be checked: refused
    lock_held_elsewhere(tmp_path / "far", str(dead_pid()), f"not-{socket.gethostname()}")
    with pytest.raises(RunDirectoryBusy, match=f"on host not-{socket.gethostname()}"):
        RunDirectoryLock(tmp_path / "far").__enter__()


def test_a_run_into_a_directory_another_process_writes_fails_and_writes_nothing(
    make_cfg, tmp_path, lock_held_elsewhere
):
    holder = lock_held_elsewhere(tmp_path / "run")
    with pytest.raises(RunDirectoryBusy, match=f"process {holder.pid} on host"):
        train(make_cfg(*TINY))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]


def test_a_busy_directory_is_seen_without_taking_or_creating_its_lock(tmp_path, lock_held_elsewhere):
    from trainlab.run.lock import busy_holder

    assert busy_holder(tmp_path / "new") is None and not (tmp_path / "new").exists()
    holder = lock_held_elsewhere(tmp_path / "run")
    assert busy_holder(tmp_path / "run")["pid"] == str(holder.pid)
    holder.kill()
    holder.wait()
    assert busy_holder(tmp_path / "run") is None  # the kernel released it with the process


def test_other_processes_of_a_multi_device_run_take_no_lock(
    make_cfg, tmp_path, lock_held_elsewhere, monkeypatch
):
    """Process 0 holds the lock; process 1 (here: rank 1 while another process holds it) trains."""
    from lightning.pytorch.utilities import rank_zero_only

    holder = lock_held_elsewhere(tmp_path / "run")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert train(make_cfg(*TINY))["status"] == "completed"
    assert f"pid={holder.pid}\n" in (tmp_path / "run" / ".lock").read_text()


@pytest.mark.slow
def test_two_runs_started_into_one_directory_one_trains_the_other_fails_fast(tmp_path):
    """The second stops before it writes anything of its own; the first trains on undisturbed
    (here until a SIGTERM ends it, once the second has given up)."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "trainlab.train", *TINY, *QUIET, "trainer.max_epochs=1000"]
    command += ["data.train_size=256", f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while not (run / "checkpoints" / "last.ckpt").is_file():  # the first is training
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    hydra_files = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    second = subprocess.run(
        [*command, "optimizer.lr=0.5"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 1 and first.poll() is None  # it gave up while the first still trains
    assert f"is being written by process {first.pid} on host {socket.gethostname()}" in second.stderr
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files  # the first's config
    assert read_summary(run)["pid"] == first.pid  # the second wrote no summary
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0].decode()
    assert first.returncode == 143, output[-3000:]
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["pid"] == first.pid
    steps = [line.split(",") for line in (run / "csv" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(steps) == len({tuple(s) for s in steps})  # nothing logged twice


# ----- no file written through a link ------------------------------------------------------------


def test_a_linked_metrics_file_is_refused_and_its_target_untouched(make_cfg, tmp_path):
    target = tmp_path / "elsewhere.csv"
    target.write_text("not the run's\n")
    (tmp_path / "run" / "csv").mkdir(parents=True)
    (tmp_path / "run" / "csv" / "metrics.csv").symlink_to(target)
    with pytest.raises(RuntimeError, match=r"csv/metrics.csv -> .*elsewhere.csv"):
        train(make_cfg(*TINY))
    assert target.read_text() == "not the run's\n"
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and "symbolic links" in summary["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything trained


def test_a_linked_summary_is_replaced_not_written_through(make_cfg, tmp_path):
    """summary.json is written whole to a new file, then renamed over: links there are replaced."""
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json.tmp").symlink_to(target)
    (tmp_path / "run" / "summary.json").symlink_to(target)
    assert train(make_cfg(*TINY))["status"] == "completed"
    assert target.read_text() == "{}"
    assert not (tmp_path / "run" / "summary.json").is_symlink()
    assert read_summary(tmp_path / "run")["status"] == "completed"


# ----- no record destroyed by a failed attempt --------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "override", "error"),
    [
        ("delete last.ckpt", "model.width=32", re.escape("ckpt_path='last': no checkpoint")),
        ("none", "model.width=64", "size mismatch|model.width"),  # Lightning's words, or trainlab's
    ],
)
def test_a_failed_resume_after_a_completed_run_leaves_its_record_and_is_recorded_beside_it(
    make_cfg, tmp_path, damage, override, error
):
    completed = train(make_cfg(*TINY))
    assert completed["status"] == "completed"
    run = tmp_path / "run"
    record = {
        name: (run / name).read_bytes() for name in ("summary.json", "config_tree.log", "csv/metrics.csv")
    }
    if damage == "delete last.ckpt":
        (run / "checkpoints" / "last.ckpt").unlink()
    tiny = [o for o in TINY if not o.startswith("model.width")]
    with pytest.raises(Exception, match=error):
        train(make_cfg(*tiny, override, "trainer.max_epochs=2", "ckpt_path=last"))
    assert {name: (run / name).read_bytes() for name in record} == record  # byte for byte
    (attempt,) = (run / "attempts").iterdir()
    failed = read_summary(attempt)
    assert failed["status"] == "failed" and re.search(error, failed["error"])
    assert "ckpt_path=last" in failed["overrides"] and f"{override}" in failed["overrides"]
    if damage == "none":  # it failed in fit: its config tree is the attempt's, beside it
        assert "width: 64" in (attempt / "config_tree.log").read_text()


# ----- orphaned temporaries, root causes ---------------------------------------------------------


def test_a_temporary_checkpoint_left_by_a_killed_write_is_removed_at_the_next_start(make_cfg, tmp_path):
    orphan = tmp_path / "run" / "checkpoints" / ".last.ckpt.k1ll3d.tmp"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"PK\x03\x04 half a checkpoint")
    assert train(make_cfg(*TINY))["status"] == "completed"
    assert not orphan.exists()
    assert sorted(p.name for p in orphan.parent.iterdir() if p.name.startswith(".")) == []


def test_the_error_names_the_os_error_behind_what_was_raised():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598")  # noqa: B904 (torch's: the OSError is its context)
    except RuntimeError as raised:
        assert describe_error(raised) == (
            "OSError: [Errno 122] Disk quota exceeded (raised as RuntimeError: unexpected pos 704 vs 598)"
        )
    assert describe_error(ValueError("plain")) == "ValueError: plain"
    try:
        try:
            raise OSError("hidden on purpose")
        except OSError:
            raise ValueError("a clear message") from None
    except ValueError as clear:
        assert describe_error(clear) == "ValueError: a clear message"  # `from None`: the author's choice


class _QuotaFile(io.RawIOBase):
    """A file whose disk quota runs out after 64 KiB."""

    def __init__(self, file) -> None:
        self.file, self.written = file, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > 64 * 1024:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return self.file.write(data)

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()
        super().close()


def test_a_disk_quota_failure_during_a_checkpoint_save_is_recorded_as_such(make_cfg, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from trainlab.checkpoints import atomic_io

    quota_os = SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    quota_os.fdopen = lambda descriptor, mode: _QuotaFile(os.fdopen(descriptor, mode))
    monkeypatch.setattr(atomic_io, "os", quota_os)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch's writer raises
        train(make_cfg(*TINY, "model.width=256"))
    error = read_summary(tmp_path / "run")["error"]
    assert error.startswith(
        f"OSError: [Errno {errno.EDQUOT}] {os.strerror(errno.EDQUOT)} (raised as RuntimeError:"
    )
    assert "unexpected pos" in error
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


# ----- DDP workers: Lightning's functions back after each job ------------------------------------


def test_lightnings_launcher_functions_are_replaced_for_a_job_and_restored_after_it(make_cfg, monkeypatch):
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    from trainlab.models.classifier import Classifier
    from trainlab.run import ddp_workers
    from trainlab.utils import hydra_job

    modules = (fabric_launcher, trainer_launcher)
    originals = [(m._hydra_subprocess_cmd, m._launch_process_observer) for m in modules]
    during = []
    monkeypatch.setattr(hydra_job, "in_multirun", lambda: True)  # a job of a multirun
    monkeypatch.setattr(
        Classifier,
        "on_train_start",
        lambda self: during.extend((m._hydra_subprocess_cmd, m._launch_process_observer) for m in modules),
        raising=False,
    )
    assert train(make_cfg(*TINY))["status"] == "completed"
    assert during[0][0] is during[1][0] is ddp_workers.job_worker_command
    assert during[0][1].__self__ is during[1][1].__self__  # the job's own observer
    assert [(m._hydra_subprocess_cmd, m._launch_process_observer) for m in modules] == originals

    # also when the job fails
    with ddp_workers.WorkersPerJob() as workers:
        assert workers.active and fabric_launcher._hydra_subprocess_cmd is ddp_workers.job_worker_command
    with pytest.raises(ZeroDivisionError), ddp_workers.WorkersPerJob():
        raise ZeroDivisionError
    assert [(m._hydra_subprocess_cmd, m._launch_process_observer) for m in modules] == originals


# ----- exit codes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_saves_last_marks_interrupted_and_exits_130(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "trainlab.train", *TINY, *QUIET, "trainer.max_epochs=1000"]
    command += ["data.train_size=256", f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a shell without job control starts background commands with SIGINT ignored; a user's
        # terminal does not: Python's Ctrl-C handler is installed only when SIGINT is not ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = run / "checkpoints" / "last.ckpt"
    while not last.is_file():
        assert process.poll() is None, process.stdout.read()[-3000:]
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-3000:]
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["error"] is None


def test_exit_codes_are_documented():
    from trainlab.run import stop

    assert (stop.EXIT_DONE, stop.EXIT_FAILED, stop.EXIT_CTRL_C, stop.EXIT_SIGTERM) == (0, 1, 130, 143)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "runs.md").read_text()
    table = textwrap.dedent(stop.__doc__.split("| code | meaning |")[1])
    for code in ("| 0 |", "| 1 |", "| 130 |", "| 143 |"):
        assert code in docs and code in table
