"""Between two logging steps a training step makes no host-device synchronisation (DESIGN.md).

A real small run, built as `trainlab.train` builds it with trainlab's defaults (its callbacks,
W&B offline and CSV loggers, the Rich bar), trains through two logging steps; every call that
would make the host wait for a GPU is counted over the steps between them. On the CPU the calls
are counted (a GPU is not needed to see them); on a GPU the same steps run under
`torch.cuda.set_sync_debug_mode("error")`, which raises at the first synchronising call:

    python -m pytest tests/test_host_sync.py -q
"""

from __future__ import annotations

import traceback

import lightning.pytorch as pl
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import trainlab.builders as builders
from trainlab.train import train

EVERY = 10  # trainer.log_every_n_steps: the logging steps are the 10th, 20th, ... (global steps 9, 19)
# the steps strictly between two logging steps: from the start of global step 10 to the start of 19
FIRST, LOGGING = EVERY, 2 * EVERY - 1
RUN = [
    "data=digits",  # 21 batches an epoch: no epoch end inside the window
    "model=mlp",
    "model.depth=2",
    "model.width=16",
    f"trainer.log_every_n_steps={EVERY}",
    f"trainer.max_steps={LOGGING + 3}",
    "test=false",
    # a layer-statistics sample inside the window, and one at the logging step's neighbour
    "callbacks.layer_stats.every_n_steps=15",
]

# aten ops whose result the host must wait for: a value read into Python, or an output whose size
# depends on the data
SYNCING_OPS = {
    torch.ops.aten._local_scalar_dense.default,  # .item(), bool(), float(), int(), format
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_dim.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten.repeat_interleave.Tensor,
}
# Tensor methods that copy to the host without passing through the ops above on a CPU tensor
SYNCING_METHODS = ("tolist", "cpu", "numpy", "__format__", "__bool__", "__float__", "__int__", "__index__")


def _where() -> str:
    frames = [f for f in traceback.extract_stack()[:-2] if "test_host_sync" not in f.filename]
    return " <- ".join(
        f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno} {f.name}" for f in frames[-12:][::-1]
    )


def _host_side(where: str) -> bool:
    """Reads of tensors that live on the host in a GPU run too: the loader's (they cross to the
    device after), and torch.optim's step counters (kept on the CPU unless `capturable`)."""
    return "torch/utils/data/" in where or ("torch/optim/optimizer.py" in where and " _get_value" in where)


class CountSyncs(TorchDispatchMode):
    """Records every synchronising op and Tensor method called while active, with where from."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._originals: dict[str, object] = {}

    def _record(self, name: str) -> None:
        where = _where()
        if not _host_side(where):
            self.calls.append(f"{name}: {where}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPS or (func is torch.ops.aten.index.Tensor and _bool_index(args)):
            self._record(str(func))
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in SYNCING_METHODS:
            original = self._originals[name] = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                self._record(f"Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()
        return super().__exit__(*exc)


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(i is not None and i.dtype == torch.bool for i in indices)


class BetweenLoggingSteps(pl.Callback):
    """Enters `watch()` at the start of the first step after a logging step and leaves it at the
    start of the next logging step, so the window holds whole non-logging steps: their batch
    fetch, hooks, training step, optimizer step, and Lightning's bookkeeping after them."""

    def __init__(self, watch) -> None:
        self.watch, self.active, self.steps = watch, None, []

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == FIRST and self.active is None:
            self.active = self.watch()
            self.active.__enter__()
        if trainer.global_step == LOGGING and self.active is not None:
            self.active.__exit__(None, None, None)
            self.active = False
        if self.active:
            self.steps.append(trainer.global_step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.active:
            self.active.__exit__(None, None, None)
            self.active = False


def _train_watching(make_cfg, monkeypatch, watch, *overrides: str) -> tuple[dict, BetweenLoggingSteps]:
    window = BetweenLoggingSteps(watch)
    original = builders.build_callbacks
    monkeypatch.setattr(
        builders, "build_callbacks", lambda cfg, has_logger: [window, *original(cfg, has_logger)]
    )
    summary = train(make_cfg(*RUN, *overrides, quiet=False))  # the defaults: bar, W&B + CSV
    return summary, window


def test_no_host_sync_between_logging_steps(make_cfg, monkeypatch):
    counter = CountSyncs()
    summary, window = _train_watching(make_cfg, monkeypatch, lambda: counter, "trainer.accelerator=cpu")
    assert summary["status"] == "completed", summary.get("error")
    assert window.steps == list(range(FIRST, LOGGING))  # whole steps, a layer-statistics sample among them
    assert counter.calls == [], "\n".join(counter.calls)


def test_the_counter_sees_what_would_synchronise():
    """The counter is not blind: a read into Python, a copy to the host and a data-dependent shape."""
    x = torch.arange(4.0)
    with CountSyncs() as counter:
        x.sum().item()
        bool(x.any())
        x.tolist()
        f"{x[0]:.2f}"
        x[x > 1]
        torch.nonzero(x)
    kinds = " ".join(counter.calls)
    for name in ("_local_scalar_dense", "Tensor.tolist", "Tensor.__format__", "nonzero"):
        assert name in kinds, kinds


class SyncDebugErrors:
    """torch.cuda.set_sync_debug_mode("error") while active."""

    def __enter__(self):
        torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_between_logging_steps_on_a_gpu(make_cfg, monkeypatch):
    # logger=csv: W&B's side of a step stays on the host (the CPU test above counts it), and GPU
    # machines that only carry W&B for its imports cannot start its service
    summary, window = _train_watching(
        make_cfg,
        monkeypatch,
        SyncDebugErrors,
        "trainer.accelerator=gpu",
        "data.pin_memory=true",
        "logger=csv",
    )
    assert summary["status"] == "completed", summary.get("error")
    assert window.steps == list(range(FIRST, LOGGING))
