"""A run's status, as its summary.json says it and as it is: `running` without a process is `killed`.

Kept free of torch and Lightning: the study report reads statuses without the training stack.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COMPLETED, DIVERGED, FAILED, INTERRUPTED = "completed", "diverged", "failed", "interrupted"
RUNNING, KILLED = "running", "killed"
# a search's trial stopped early by Optuna's pruner: an outcome, not a failure
PRUNED = "pruned"
# What a re-launch with skip_completed=true resumes from its checkpoints/last.ckpt.
RESUMABLE = (INTERRUPTED, KILLED)


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux /proc); None where unknown.

    Tells a live run from a dead one whose pid was given to another process since."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name in (...) may hold spaces


def alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return started is None or process_start(pid) in (None, started)


def current_status(summary: Mapping[str, Any]) -> str | None:
    """The summary's status, with `running` read as `killed` when its process is gone.

    A run writes `running` when it starts and its outcome when it ends; one that stays
    `running` without its process was killed (SIGKILL, the OOM killer, a lost node). Only a
    process on this host can be checked: a run on another host stays `running`, and its
    `updated_at` (refreshed at each training epoch end) says when it was last seen alive.
    """
    status = summary.get("status")
    if status != RUNNING or summary.get("hostname") != socket.gethostname() or not summary.get("pid"):
        return status
    return RUNNING if alive(int(summary["pid"]), summary.get("process_started")) else KILLED
