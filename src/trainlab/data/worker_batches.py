"""Collation that leaves the freeing of each batch's shared memory to the worker that made it.

A DataLoader worker collates every batch into a new shared-memory segment and hands it to the
training process. That process maps it, reads it (on a GPU the pin-memory thread copies it into
pinned memory) and drops it, and whoever drops a segment last frees its pages. By default that is
the training process, on the one thread that takes every batch: for a 224 px batch of 256 images
(37 MiB), ~10-15 ms of the ~20-25 ms each batch costs that thread on a 2-core CPU, which caps the
loader however many workers there are (BENCHMARKS.md, "what a batch costs the training process").

A worker that keeps references to its last few batches is the last holder instead. It frees
their pages on its own core, in parallel with the others, and dropping a batch in the training
process only unmaps it (~1.5 ms). Nothing is reused or written again: the training process gets
exactly the batch the collate function made. The price is shared memory: up to `keep` more
batches per worker stay allocated while it works. A worker with no new batch for `idle_s` seconds
lets its kept batches go (a daemon thread of the worker's), so that idle persistent workers (the
validation loader's while training runs, the training loader's during validation) hold nothing.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import default_collate, get_worker_info

# DataLoader's prefetch_factor, which the DataModule sets explicitly: with it a worker has at
# most this many batches in flight, so keeping one more than it means the training process has
# usually dropped a batch before the worker drops its own reference
PREFETCH_FACTOR = 2
KEEP = PREFETCH_FACTOR + 1
# a worker that has made no batch for this long is idle: between epochs, or its loader not in use
IDLE_S = 2.0


class WorkerKeepsBatches:
    """`collate` (default: torch's default_collate), whose result a DataLoader worker also keeps
    until it has made `keep` more batches, or has made none for `idle_s` seconds. In the training
    process itself (num_workers=0) it keeps nothing: there the batch's memory is not shared."""

    def __init__(
        self,
        keep: int = KEEP,
        collate: Callable[[Sequence[Any]], Any] = default_collate,
        idle_s: float = IDLE_S,
    ) -> None:
        if keep < 1:
            raise ValueError(f"WorkerKeepsBatches(keep={keep}): keep at least 1 batch.")
        self.keep, self.collate, self.idle_s = keep, collate, idle_s
        self._kept: deque | None = None  # made in each worker, never pickled with batches
        self._last_batch_at = 0.0

    def __call__(self, samples: Sequence[Any]) -> Any:
        batch = self.collate(samples)
        if get_worker_info() is not None:
            if self._kept is None:
                self._kept = deque(maxlen=self.keep)
                threading.Thread(
                    target=_let_go_when_idle, args=(weakref.ref(self),), name="let-go-when-idle", daemon=True
                ).start()
            self._last_batch_at = time.monotonic()
            self._kept.append(batch)  # the oldest kept batch is dropped here, in the worker
        return batch

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker starts with none kept
        return {**self.__dict__, "_kept": None}


def _let_go_when_idle(collate_ref: weakref.ref) -> None:
    """A worker's daemon thread: drop the kept batches once no batch came for `idle_s` seconds.
    Dropping references is all it does (a batch still in flight is then freed by the training
    process, as without WorkerKeepsBatches; deque operations are atomic). It ends with its
    WorkerKeepsBatches, of which it holds no reference while it sleeps."""
    while (collate := collate_ref()) is not None:
        idle_s = collate.idle_s
        if collate._kept and time.monotonic() - collate._last_batch_at > idle_s:
            collate._kept.clear()
        del collate
        time.sleep(idle_s / 2)
