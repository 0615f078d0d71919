"""How a stopped run ends the process, and the exit codes of trainlab's entry points.

| code | meaning |
| --- | --- |
| 0 | done: the run (every job of a multirun) completed, or was skipped as completed before |
| 1 | failed: the run failed, or a job of the multirun failed, diverged or was interrupted |
| 130 | stopped by Ctrl-C (SIGINT), with its last.ckpt saved to resume from |
| 143 | stopped by SIGTERM (a scheduler's preemption, `kill`), with its last.ckpt saved |

130 and 143 follow the shell's 128 + signal number. Lightning turns Ctrl-C during fit into a
graceful shutdown and `SystemExit(1)`, and SIGTERM into `SIGTERMException` (a SystemExit without
a code) at the next step boundary: `stop_exit` and `exit_on_ctrl_c` give both their code.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_DONE, EXIT_FAILED = 0, 1
EXIT_CTRL_C = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


def raise_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside a trainer's fit or test (building data, between jobs): stop right away.

    During fit and test Lightning's own handler runs first and calls this one too: the
    trainer then stops at the next step boundary instead, with a checkpoint (InterruptCheckpoint).
    """
    if signal.getsignal(signal.SIGTERM) is not raise_on_sigterm:
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    raise SIGTERMException(128 + signum)


def stop_on_sigterm() -> None:
    """Install `raise_on_sigterm` (the entry points do, before Hydra starts)."""
    signal.signal(signal.SIGTERM, raise_on_sigterm)


def stop_exit(error: BaseException, interrupted: bool) -> BaseException:
    """What a stopped run raises after `error`: SystemExit(143) for SIGTERM; KeyboardInterrupt for
    Ctrl-C (also for Lightning's SystemExit(1) after a Ctrl-C, the run `interrupted`), which an
    in-process caller (a notebook, a script looping over runs) sees as Ctrl-C, and the entry
    points end with 130 (`exit_on_ctrl_c`); any other SystemExit as it is."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(error, SIGTERMException):
        return error if error.code else SystemExit(EXIT_SIGTERM)
    if isinstance(error, SystemExit) and interrupted:
        return KeyboardInterrupt()
    return error


@contextmanager
def exit_on_ctrl_c() -> Iterator[None]:
    """Around an entry point: Ctrl-C ends the process with 130, as the shell's convention says
    (Python's own ending after an unhandled KeyboardInterrupt is a SIGINT death, which a shell
    reports as 130 but a parent process as -2)."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(EXIT_CTRL_C) from None
