"""Lightning calls every callback's per-batch hooks on every batch, including the hooks a callback
does not define: each such call costs ~3.5 us (a profiler context, the callback's `state_key`
formatted into a string, the module's current hook name set and reset), and a trainer with the
default callbacks calls ~80 of them a training step, ~0.25 ms: a sixth of a bare Lightning
step of a small network on a CPU (scripts/bench/overhead.py --mode host_bound, BENCHMARKS.md).

Lightning skips a hook whose attribute is not callable (`lightning.pytorch.trainer.call.
_call_callback_hooks`: `fn = getattr(callback, hook_name); if callable(fn)`), so an instance
attribute `None` over a hook its class inherits unchanged from `Callback` makes that hook free.
This depends on Lightning's dispatch, not on its API, so it is fenced: it runs only on the
Lightning versions checked here, only when the dispatch still reads as above, and not at all
with `skip_idle_callback_hooks=false`; anywhere else every hook is called as Lightning does.
Nothing changes for the hooks a callback defines, nor for Lightning's other ways of asking
about hooks (`is_overridden` answers False for None, as it does for the base method).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterable

import lightning
import lightning.pytorch as pl
from packaging.version import Version

log = logging.getLogger(__name__)

# The versions whose dispatch was read and measured (2.6.6), back to the 2.x releases that
# dispatch the same way.
CHECKED_VERSIONS = (Version("2.1"), Version("2.7"))

# Hooks Lightning calls once per batch (training, validation, test, predict) or several times
# per training step.
PER_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


@functools.cache
def dispatch_skips_non_callables() -> bool:
    """Whether this Lightning skips a hook attribute that is not callable (see the module's docstring)."""
    if not CHECKED_VERSIONS[0] <= Version(lightning.__version__) < CHECKED_VERSIONS[1]:
        return False
    try:
        from lightning.pytorch.trainer import call

        source = inspect.getsource(call._call_callback_hooks)
    except (ImportError, AttributeError, OSError, TypeError):
        return False
    return "fn = getattr(callback, hook_name)" in source and "if callable(fn):" in source


def skip_idle_hooks(callbacks: Iterable[pl.Callback]) -> list[str]:
    """Make Lightning skip the per-batch hooks each callback inherits unchanged from `Callback`.
    Returns what was skipped ("<callback class>.<hook>"); nothing where the fence says no."""
    if not dispatch_skips_non_callables():
        log.info(
            f"Lightning {lightning.__version__}: every callback hook is called (skip_idle_hooks is off)."
        )
        return []
    skipped = []
    for callback in callbacks:
        for hook in PER_BATCH_HOOKS:
            inherited = getattr(type(callback), hook, None) is getattr(pl.Callback, hook)
            if inherited and hook not in vars(callback):
                setattr(callback, hook, None)
                skipped.append(f"{type(callback).__name__}.{hook}")
    return skipped
