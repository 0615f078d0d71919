"""One writer per run directory: `<run dir>/.lock`, held for the run's life.

Two processes started into one directory (the same `hydra.run.dir`, a re-launch while the first
still runs) would interleave their metrics and overwrite each other's checkpoints and summary.
The first takes an exclusive `flock` on `.lock` and writes its pid and host into it; the second
is refused with an error naming them, before it writes anything of its own into the run.

The kernel releases a flock when the process that holds it is gone, so the lock of a killed run
is simply taken over. One case keeps it: a child forked by the dead run (a data-loader worker)
still holds the open file. A lock whose recorded process on this host is gone is then replaced
by a fresh file. Only process 0 of a multi-process run takes the lock (its other processes write
no record of their own).

Hydra writes a run's `.hydra/` files before the run starts, so a single run's directory is looked
at first by a Hydra callback (`RefuseBusyRunDirectory`, conf/hydra/default.yaml): a directory
another live process holds is refused there, before Hydra writes anything into it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainlab.run.status import alive, process_start

LOCK_NAME = ".lock"


class RunDirectoryBusy(RuntimeError):
    """Another process is writing this run directory."""


class RunDirectoryLock:
    """`with RunDirectoryLock(run_dir):` the body is the only writer of `run_dir` (see the module)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._descriptor: int | None = None

    def __enter__(self) -> RunDirectoryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                holder = _read_holder(self.path)
                if attempt == 0 and _is_gone(holder):
                    self.path.unlink(missing_ok=True)  # held by an orphan of a dead run: a fresh file
                    continue
                raise RunDirectoryBusy(_busy_message(self.path.parent, holder)) from None
            pid = os.getpid()
            record = f"pid={pid}\nhost={socket.gethostname()}\nprocess_started={process_start(pid)}\n"
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, record.encode(), 0)
            self._descriptor = descriptor
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def __exit__(self, *exc_info: Any) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # releases the flock; the file stays (its content is stale)
            self._descriptor = None


def busy_holder(run_dir: Path) -> dict[str, str] | None:
    """The process that holds `run_dir`'s lock now ({pid, host, ...}), or None: a look that
    takes the lock for an instant and gives it back at once, creating nothing."""
    path = Path(run_dir) / LOCK_NAME
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file (a new directory) or not a plain file: nobody holds it
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            return None
        holder = _read_holder(path)
        return None if _is_gone(holder) else holder
    finally:
        os.close(descriptor)  # releases the flock if it was taken
    return None


class RefuseBusyRunDirectory(Callback):
    """Hydra callback: a single run into a directory another live process is writing stops here,
    before Hydra writes that run's `.hydra/` files over the other's (exit status 1)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _launched_rank() != 0:  # DDP's other processes run in process 0's directory, by design
            return
        run_dir = Path(config.hydra.run.dir)
        holder = busy_holder(run_dir)
        if holder is not None:
            # SystemExit: Hydra turns an Exception raised by a callback into a warning
            raise SystemExit(f"Error: {_busy_message(run_dir, holder)}")


def _launched_rank() -> int:
    """This process's global rank as its launcher set it in the environment (the variables
    Lightning's `rank_zero_only` reads), without importing Lightning; 0 when none is set."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _read_holder(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _is_gone(holder: dict[str, str]) -> bool:
    """The recorded process ran on this host and has ended (its pid free or given to another)."""
    if holder.get("host") != socket.gethostname() or not holder.get("pid", "").isdigit():
        return False
    started = holder.get("process_started")
    return not alive(int(holder["pid"]), None if started in (None, "None") else started)


def _busy_message(run_dir: Path, holder: dict[str, str]) -> str:
    who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    return (
        f"{run_dir} is being written by {who} (it holds {run_dir / LOCK_NAME}). Two runs in one "
        "directory would mix their metrics and checkpoints: wait for it to end, stop it, or give "
        "this run its own directory (leave hydra.run.dir at its default, or choose another)."
    )
