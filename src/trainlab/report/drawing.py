"""A report's figures drawn side by side, one per CPU, in forked worker processes.

Each figure is a task: a function of no arguments that draws and saves one figure and returns
its path (None when there was nothing to draw). Matplotlib draws in Python, one figure at a time
per process; a study's nine layer-statistics figures took 1.1-1.4 s on a 2-core CPU, most of
the study report's time (BENCHMARKS.md, study throughput), and two processes drew them in 0.7 s.

The workers are forked (Linux), so they inherit the tasks, the jobs' tables and every imported
module: nothing is pickled but a task's index and its returned path, and no worker imports
anything. A forked worker only draws and writes its files. Elsewhere (macOS, where forking
a process with system frameworks loaded is unsafe; Windows, which cannot fork), with one usable
CPU, or with one task, the tasks run here one after another; so do they when a worker dies
(e.g. killed for memory): every figure is drawn either way. So are they in a daemonic process
(a multiprocessing pool's worker), which may not start processes, and while the interpreter
exits (the report of a stopped multirun is written from an `atexit` function), when
concurrent.futures accepts no new work.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

log = logging.getLogger(__name__)

FigureTask = Callable[[], Path | None]
# more processes than this add forks and first-figure warm-ups (fonts, text layout) for little
MAX_WORKERS = 8

_tasks: Sequence[FigureTask] = ()  # a worker's copy of the tasks (set in the worker only)


def draw_all(tasks: Sequence[FigureTask]) -> list[Path | None]:
    """Every task's result, in the order of `tasks`; drawn in parallel where `workers_for` allows.
    An exception a task raises is raised here, as if it had run here."""
    workers = workers_for(len(tasks))
    if workers > 1:
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about forking a process that runs threads (W&B's, a progress
                # bar's): the workers only draw, and touch no lock those threads take
                warnings.simplefilter("ignore", DeprecationWarning)
                context = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(workers, context, initializer=_receive, initargs=(tasks,)) as pool:
                    try:
                        drawn = pool.map(_run, range(len(tasks)))  # submits every task, here
                    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
                        return [task() for task in tasks]
                    return list(drawn)
        except (BrokenProcessPool, OSError) as error:  # a worker died, or no process could be forked
            log.warning(
                f"Drawing the report's figures in worker processes failed ({error!r}); drawing them here."
            )
    return [task() for task in tasks]


def workers_for(task_count: int) -> int:
    """How many processes draw `task_count` figures: one per usable CPU (at most MAX_WORKERS and
    one per task) on Linux; 1 (draw here) elsewhere, and in a daemonic process (a
    multiprocessing pool's worker), which may not start processes of its own."""
    if not sys.platform.startswith("linux") or task_count < 2 or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), task_count, MAX_WORKERS))


def _receive(tasks: Sequence[FigureTask]) -> None:
    global _tasks
    _tasks = tasks


def _run(index: int) -> Path | None:
    return _tasks[index]()
