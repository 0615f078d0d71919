"""callbacks=ema and callbacks=swa: the runs complete and the evaluated weights are the averages."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.testing import assert_close

from trainlab.train import train

TINY = [
    "data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv",
    "data.train_size=64", "data.batch_size=32", "callbacks.layer_stats=null",
    "callbacks.augment_preview=null", "callbacks.confusion_matrix=null",
]  # fmt: skip
RECORDER = "+callbacks.recorder._target_=test_weight_averaging.Recorder"
SNAPSHOTS: dict[str, list[dict[str, torch.Tensor]]] = {"step": [], "epoch": [], "test": []}


class Recorder(pl.Callback):
    """Keeps the raw weights after every optimizer step and at every epoch end."""

    def on_fit_start(self, trainer, pl_module):
        for snapshots in SNAPSHOTS.values():
            snapshots.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        SNAPSHOTS["step"].append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module):
        SNAPSHOTS["epoch"].append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_test_start(self, trainer, pl_module):
        SNAPSHOTS["test"].append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def floats(state: dict[str, torch.Tensor], parameters_only: bool = False) -> dict[str, torch.Tensor]:
    """The floating-point entries (BatchNorm's num_batches_tracked is a count), or the parameters."""
    buffers = ("running_mean", "running_var")
    return {
        k: v
        for k, v in state.items()
        if v.is_floating_point() and not (parameters_only and k.endswith(buffers))
    }


@pytest.mark.slow
def test_ema_checkpoint_holds_the_hand_computed_average(make_cfg):
    decay = 0.5
    summary = train(
        make_cfg(*TINY, "callbacks=ema", f"callbacks.ema.decay={decay}", "trainer.max_epochs=2", RECORDER)
    )
    assert summary["status"] == "completed"
    assert summary["weight_averaging"] == {"method": "ema", "decay": decay, "evaluated": "averaged"}
    checkpoint = torch.load(summary["best_checkpoint"], weights_only=True)
    raw = [floats(state) for state in SNAPSHOTS["step"][: checkpoint["global_step"]]]
    assert len(raw) == checkpoint["global_step"] >= 2
    expected = dict(raw[0])  # AveragedModel's first update copies the weights, then EMA
    for weights in raw[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    assert_close(floats(checkpoint["state_dict"]), expected)
    assert_close(floats(checkpoint["current_model_state"]), raw[-1])  # the raw weights are kept beside
    assert not torch.equal(checkpoint["state_dict"]["net.head.weight"], raw[-1]["net.head.weight"])
    assert summary["tested_checkpoint"] == summary["best_checkpoint"]
    assert_close(SNAPSHOTS["test"][0], checkpoint["state_dict"])  # the test ran on the average


@pytest.mark.slow
def test_swa_tests_the_average_of_the_epochs_and_replaces_the_step_schedule(make_cfg):
    overrides = ["callbacks=swa", "callbacks.swa.swa_epoch_start=2", "trainer.max_epochs=3", RECORDER]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(make_cfg(*TINY, *overrides))
    assert not [w for w in caught if "only supported every epoch" in str(w.message)]
    assert summary["status"] == "completed"
    averaging = summary["weight_averaging"]
    assert averaging["method"] == "swa" and averaging["n_averaged"] == 2
    assert summary["tested_checkpoint"] == averaging["checkpoint"]
    assert averaging["checkpoint"].endswith("swa.ckpt")
    # averaged at the start of epochs 1 and 2 (0-based): the weights after epochs 0 and 1
    first, second = (floats(state, parameters_only=True) for state in SNAPSHOTS["epoch"][:2])
    checkpoint = torch.load(averaging["checkpoint"], weights_only=True)
    assert_close(
        floats(checkpoint["state_dict"], parameters_only=True), {k: (first[k] + second[k]) / 2 for k in first}
    )
    assert_close(SNAPSHOTS["test"][0], checkpoint["state_dict"])  # the test ran on the average
