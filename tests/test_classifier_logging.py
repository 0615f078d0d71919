"""What the Classifier logs, and when: the step loss on logging steps only, the epoch's
batch-size-weighted mean loss and accuracy at epoch end, under Lightning's usual names."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch

from trainlab.train import train

TINY_MLP = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv"]


class RecordSteps(pl.Callback):
    """Each training step's loss and batch size."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _, labels = batch
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(len(labels))


def test_step_loss_on_logging_steps_and_epoch_means_at_epoch_end(make_cfg, tmp_path, monkeypatch):
    import trainlab.builders as builders

    recorder = RecordSteps()
    original = builders.build_callbacks
    monkeypatch.setattr(
        builders, "build_callbacks", lambda cfg, has_logger: [*original(cfg, has_logger), recorder]
    )
    summary = train(make_cfg(*TINY_MLP, "trainer.max_epochs=1", "trainer.log_every_n_steps=4", "test=false"))

    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    step_rows = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    steps = len(recorder.losses)
    # Lightning's convention for log_every_n_steps=4: after steps 4, 8, ... (logged as step 3, 7, ...)
    assert sorted(step_rows) == [s for s in range(steps) if (s + 1) % 4 == 0]
    for step, value in step_rows.items():
        assert value == pytest.approx(recorder.losses[step], rel=1e-6)

    weighted_mean = sum(loss * n for loss, n in zip(recorder.losses, recorder.sizes, strict=True)) / sum(
        recorder.sizes
    )
    epoch_row = next(r for r in rows if r.get("train/loss_epoch"))
    assert float(epoch_row["train/loss_epoch"]) == pytest.approx(weighted_mean, rel=1e-5)
    assert summary["metrics"]["train/loss"] == pytest.approx(weighted_mean, rel=1e-5)
    assert 0.0 < float(epoch_row["train/acc"]) <= 1.0 and "train/acc" in summary["metrics"]
    # validation: one mean per epoch, no step values
    assert {"val/loss", "val/acc"} <= summary["metrics"].keys()
    assert not any(key.startswith("val/loss_") for key in rows[0])


def test_train_accuracy_is_the_epochs_fraction_correct(make_cfg, monkeypatch):
    """train/acc equals the fraction of training images the network classified right, each
    counted with the weights it was trained on in that step."""
    import trainlab.builders as builders

    counted = {"correct": 0, "total": 0}

    class CountCorrect(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            images, labels = batch
            with torch.no_grad():  # norm=none: a forward with no side effects (no BN statistics)
                predictions = pl_module.net(images).argmax(dim=1)
            counted["correct"] += int((predictions == labels).sum())
            counted["total"] += len(labels)

    original = builders.build_callbacks
    monkeypatch.setattr(
        builders, "build_callbacks", lambda cfg, has_logger: [*original(cfg, has_logger), CountCorrect()]
    )
    summary = train(make_cfg(*TINY_MLP, "norm=none", "trainer.max_epochs=1", "test=false"))
    assert summary["metrics"]["train/acc"] == pytest.approx(counted["correct"] / counted["total"], abs=1e-6)
