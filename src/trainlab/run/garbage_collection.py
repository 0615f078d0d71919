"""The training stack imported once per process with Python's garbage collector paused, and then
kept out of its sight.

Importing torch, torch._dynamo, Lightning, torchmetrics, Albumentations and scikit-learn creates
about half a million objects that live as long as the process. While they are imported, each
full collection walks all of those imported so far: nine of them took 0.95 s of a run's start-up
on a 2-core CPU and collected almost nothing (10-144 objects each), since imports leave little
garbage (scripts/bench/study_overhead.py, BENCHMARKS.md). Once imported, they are frozen
(`gc.freeze`): every full collection during training walked them again, 0.34 s each, and one
more at exit took 1.5-2.5 s. Objects created later (a job's model, data, trainer) are collected as
usual; freezing only once keeps a job's garbage from being frozen with them.

This follows the `gc.freeze` documentation's advice for long-lived objects (no collections
while they are created, frozen once they are), except that the young generations are still
collected, so that what the imports leave behind is freed rather than frozen.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# a third-generation threshold no import reaches: no full collection while the stack is imported
_NO_FULL_COLLECTION = 1_000_000_000


@contextlib.contextmanager
def imports_spared_from_garbage_collection() -> Iterator[None]:
    """Run the body (the imports) without full collections, then freeze every object alive;
    once per process: a later use (the next job of a multirun, whose imports are done) changes
    nothing. The young generations are still collected, so that the short-lived garbage of the
    imports is freed rather than frozen. The collector's thresholds are restored however the
    body ends."""
    if gc.get_freeze_count() > 0:
        yield
        return
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], _NO_FULL_COLLECTION)
    try:
        yield
        gc.freeze()
    finally:
        gc.set_threshold(*thresholds)
