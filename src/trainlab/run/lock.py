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
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

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
