"""What a checkpoint needs, beyond Lightning's own state, so that a run resumed from it trains as
the uninterrupted run would: the global random generators and the partial epoch's metrics.

Lightning saves the weights, optimizer, schedules and loop progress; the training order and
augmentation are the DataModule's (trainlab.data.sampler). Left out are the states of torch's,
numpy's and Python's global generators (dropout, input noise, anything a callback draws) and the
states of torchmetrics metrics, which are not in the module's state_dict: an epoch resumed in
the middle would report the accuracy and mean loss of its second part only.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import Metric

from trainlab.data.sampler import resume_position

CHECKPOINT_KEY = "trainlab_resume_state"


def _torch_states(device: torch.device) -> dict[str, Any]:
    """torch's CPU generator and, on a GPU, the generator of the module's device (no host sync)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch.cuda"] = {device.index or 0: torch.cuda.get_rng_state(device)}
    return states


def _global_states(device: torch.device) -> dict[str, Any]:
    """Every global generator, as plain data (checkpoints load with torch's weights_only=True)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    states = {
        **_torch_states(device),
        "numpy": (name, keys.tolist(), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = dict(enumerate(torch.cuda.get_rng_state_all()))
    return states


def _set_global_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    for index, state in (states.get("torch.cuda") or {}).items():
        if index < torch.cuda.device_count():
            torch.cuda.set_rng_state(state, index)
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _metrics(module: torch.nn.Module) -> dict[str, Metric]:
    return {name: m for name, m in module.named_modules() if isinstance(m, Metric)}


class ResumeState(pl.Callback):
    """Saves the global generators and the epoch's metric states in every checkpoint written
    while fitting; restores them when a resumed fit starts training.

    A checkpoint written during a training step (an interrupt) resumes with that step, so it gets
    torch's generators as they were when the step began: they are copied before every step
    (a few microseconds, no host sync). numpy's and Python's are saved as they are at the save.
    """

    def __init__(self) -> None:
        self._step_states: dict[str, Any] | None = None
        self._to_restore: dict[str, Any] | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        self._step_states = _torch_states(pl_module.device)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        states = _global_states(pl_module.device)
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.ready > progress.processed and self._step_states is not None:  # inside a step
            states["torch"] = self._step_states["torch"]
            if "torch.cuda" in self._step_states:
                states["torch.cuda"] = {**states.get("torch.cuda", {}), **self._step_states["torch.cuda"]}
        saved: dict[str, Any] = {"rng": states}
        _, batches_trained = resume_position(trainer)
        if batches_trained:  # mid-epoch: the epoch's metrics so far
            flush = getattr(pl_module, "flush_metric_updates", None)  # updates a module defers (Classifier)
            if callable(flush):
                flush()
            saved["metrics"] = {
                name: {key: _detached(value) for key, value in metric.metric_state.items()}
                for name, metric in _metrics(pl_module).items()
            }
        checkpoint[CHECKPOINT_KEY] = saved

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._to_restore = checkpoint.get(CHECKPOINT_KEY)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # here, not at loading: after everything that draws before training (sanity validation)
        saved, self._to_restore = self._to_restore, None
        if not saved:
            return
        _set_global_states(saved["rng"])
        metrics = _metrics(pl_module)
        for name, state in (saved.get("metrics") or {}).items():
            if name in metrics:
                for key, value in state.items():
                    setattr(metrics[name], key, _to_device(value, metrics[name].device))


def _detached(value: Any) -> Any:
    return [v.detach().clone() for v in value] if isinstance(value, list) else value.detach().clone()


def _to_device(value: Any, device: torch.device) -> Any:
    return [v.to(device) for v in value] if isinstance(value, list) else value.to(device)
