"""Failure isolation under launchers whose workers run several jobs: each job in a process of its own.

Hydra's joblib launcher runs the jobs in loky's worker processes. When the operating system kills
one of them (SIGKILL, the out-of-memory killer), loky declares its whole pool broken and kills
the other workers with their jobs, joblib raises `TerminatedWorkerError`, and the multirun ends
without its report. submitit's launchers keep the other jobs alive, but raise
`UncompletedJobError` for the killed one, with the same end.

`JobInChildProcess` wraps a Hydra task function so that the worker (a loky worker, a submitit
job process) forks a child for the job and waits for it: the job's code, its memory and its
death are the child's. A child killed by a signal leaves the worker alive; the worker records the
job as `killed` in its summary.json and returns normally, so that the sweep goes on, the report
is written and the report callback's exit code (1) says that a job failed. The trainlab launchers
(`hydra/launcher=joblib`, `hydra/launcher=submitit_local`, in hydra_plugins/trainlab_launchers)
wrap their task function with it.

The child is forked (Linux, macOS; where there is no fork, the job runs in the worker as
before): it starts with everything the worker has set up for the job (Hydra's config, logging,
working directory) and with the modules the worker imported ahead (`preload`: the training stack,
imported once per worker, as the jobs of a worker shared it when they ran in the worker itself;
importing it took 33-39 s on a busy 2-core CPU). What a process keeps between jobs beyond its
imports (the data set read from disk, W&B's service process) is the job's own. The child ends
when its worker ends (Linux: `PR_SET_PDEATHSIG`, SIGTERM), so that no job trains on unobserved
after the launcher gave up on it. Ctrl-C reaches the child from the terminal, as it reaches every
process of the foreground group; the worker waits for the child to save its checkpoint, then
stops as well.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from trainlab.run.status import KILLED, RUNNING

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POLL_S = 0.5  # how often the worker looks whether its job's process has ended


class JobInChildProcess:
    """A Hydra task function, run in a forked child process of the calling process.

    Returns what the task returned; raises what it raised (a Ctrl-C or SIGTERM stops the sweep
    as before). A child that ends without an outcome (killed by a signal, or exited from native
    code) is recorded `killed` in its run's summary.json, with the signal as its `error`, and
    None is returned: the job is over, and the summary, not Hydra's return value, says how.
    """

    def __init__(self, task_function: Any, preload: Sequence[str] = ()) -> None:
        self.task_function, self.preload = task_function, tuple(preload)

    def __call__(self, cfg: Any) -> Any:
        if "fork" not in multiprocessing.get_all_start_methods():  # Windows
            return self.task_function(cfg)
        _import_once(self.preload)
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_run_child, args=(self.task_function, cfg, sender), daemon=False)
        child.start()
        sender.close()  # the child's is the only sending end left
        outcome, interrupted = _wait_for(child, receiver)
        if outcome is None:
            _record_killed(cfg, child.pid, child.exitcode)
        elif outcome[0] == "raised":
            raise outcome[1]
        if interrupted:  # Ctrl-C reached this process: stop after the job, as the job would have
            raise KeyboardInterrupt
        return None if outcome is None else outcome[1]


def _import_once(modules: Sequence[str]) -> None:
    """Import `modules` in this process (the worker), with the garbage collector spared and the
    result frozen (trainlab.run.garbage_collection), so that every child starts with them and
    does not copy their pages by collecting them. Nothing is computed: no thread pool or CUDA
    context exists yet to be forked."""
    missing = [name for name in modules if name not in sys.modules]
    if not missing:
        return
    from trainlab.run.garbage_collection import imports_spared_from_garbage_collection

    with imports_spared_from_garbage_collection():
        for name in missing:
            importlib.import_module(name)


def _wait_for(child: Any, receiver: Any) -> tuple[tuple[str, Any] | None, bool]:
    """(the child's outcome or None when it ended without one, whether Ctrl-C reached this
    process meanwhile). The child's end is watched with `waitpid`, not through a file
    descriptor: processes it forked (data loader workers) hold its descriptors open for a while
    after it was killed. A Ctrl-C here does not
    abandon the child, which got the terminal's Ctrl-C too and is saving its checkpoint: this
    process waits for it."""
    outcome, interrupted = None, False
    while True:
        try:
            if receiver.poll(_POLL_S):  # an outcome, or the end of the pipe
                try:
                    outcome = receiver.recv()
                except EOFError:  # the child ended without sending
                    outcome = None
                child.join()
                break
            if child.exitcode is not None:  # ended (waitpid): what it sent is in the pipe already
                outcome = receiver.recv() if receiver.poll() else None
                break
        except KeyboardInterrupt:
            interrupted = True
    receiver.close()
    return outcome, interrupted


def _run_child(task_function: Any, cfg: Any, sender: Any) -> None:
    """In the child: run the job, send its outcome, run the exit handlers the job registered.

    The exit handlers inherited from the worker are the worker's, not the job's: they are
    dropped, and the job's own (W&B's teardown, ...) run as at a normal interpreter exit (a
    multiprocessing child otherwise ends with `os._exit`, which runs none)."""
    atexit._clear()
    _end_with_parent()
    try:
        outcome: tuple[str, Any] = ("returned", task_function(cfg))
    except BaseException as error:  # Ctrl-C, SIGTERM, a failure outside trainlab's own handling
        outcome = ("raised", error)
    try:
        sender.send(outcome)
    except Exception as error:  # an outcome that does not pickle: say what it was
        sender.send(
            ("raised", RuntimeError(f"The job ended with {outcome[1]!r}, which cannot be sent back: {error}"))
        )
    sender.close()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _end_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent ends (a killed worker), so that the job stops
    as a SIGTERM stops it (`interrupted`, with a checkpoint) instead of training on unobserved.
    Elsewhere nothing: the job then ends on its own."""
    parent = os.getppid()
    libc_name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the request: nobody waits for this job
        os.kill(os.getpid(), signal.SIGTERM)


def _record_killed(cfg: Any, pid: int | None, exitcode: int | None) -> None:
    """Write `killed` into the job's summary.json: over the `running` record its process left,
    or as a new record when the process died before it wrote one (while importing the stack)."""
    run_dir = _run_dir(cfg)
    path = run_dir / "summary.json"
    how = (
        f"killed by {signal.Signals(-exitcode).name}"
        if exitcode is not None and exitcode < 0 and -exitcode in signal.valid_signals()
        else f"ended with exit code {exitcode} without an outcome"
    )
    if exitcode == -signal.SIGKILL:
        how += "; SIGKILL is what the out-of-memory killer sends (see `dmesg`)"
    error = f"The job's process ({pid}) was {how}. The other jobs went on."
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        summary = {"status": RUNNING, "metrics": {}, "global_step": 0, "epochs": 0, "overrides": _overrides()}
    if summary.get("status") != RUNNING:  # the job wrote its outcome and then died: keep it
        return
    now = datetime.now().isoformat(timespec="milliseconds")
    summary.update(status=KILLED, error=error, finished_at=now, updated_at=now)
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    temporary.replace(path)
    log.error(f"Job recorded as killed in {path}: {error}")


def _run_dir(cfg: Any) -> Path:
    """The job's run directory: `paths.output_dir` (where train.py writes summary.json), else
    Hydra's output directory for the job."""
    from hydra.core.hydra_config import HydraConfig

    paths = cfg.get("paths") if hasattr(cfg, "get") else None
    if paths is not None and paths.get("output_dir"):
        return Path(paths.output_dir)
    return Path(HydraConfig.get().runtime.output_dir)


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
