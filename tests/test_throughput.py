"""Images per second (trainlab.callbacks.throughput): logged at Lightning's logging steps, from
the batches' sizes and the clock read only there; on by default, into the run's metrics.csv."""

from __future__ import annotations

import csv
import math

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from trainlab.callbacks import throughput
from trainlab.callbacks.throughput import ImagesPerSecond, batch_size
from trainlab.train import train

from conftest import StepLogger
from test_transfer_policies import classifier


def test_images_over_the_wall_time_of_each_logging_interval(monkeypatch):
    reads = []

    def clock() -> float:  # every read of the clock one second later than the last
        reads.append(len(reads))
        return float(len(reads))

    monkeypatch.setattr(throughput, "perf_counter", clock)
    images = torch.randn(44, 1, 8, 8)  # batches of 4: 11 steps, the last of 0..10 is step 11
    data = DataLoader(TensorDataset(images, torch.randint(0, 3, (44,))), batch_size=4)
    logger = StepLogger()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        log_every_n_steps=5,
        logger=logger,
        callbacks=[ImagesPerSecond()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(classifier("mlp"), train_dataloaders=data)
    logged = [(step, m[throughput.METRIC]) for step, m in logger.records if throughput.METRIC in m]
    # epoch 0 starts (clock 1), steps 5 and 10 (clocks 2, 3): 20 images in 1 s each; epoch 1 starts
    # (clock 4) after the 11th step, so step 15 counts its 4 steps (16 images) and step 20 five
    assert logged == [(4, 20.0), (9, 20.0), (14, 16.0), (19, 20.0)]  # on Lightning's rows: step - 1
    assert len(reads) == 2 + 4  # the clock is read at each epoch's start and each logging step only
    logged_loss_steps = [step for step, m in logger.records if "train/loss_step" in m]
    assert logged_loss_steps == [step for step, _ in logged]


def test_batch_size_is_the_first_dimension_of_the_first_tensor():
    assert batch_size((torch.zeros(7, 3), torch.zeros(7))) == 7
    assert batch_size({"image": torch.zeros(5, 1, 2, 2), "label": torch.zeros(5)}) == 5
    assert batch_size(torch.zeros(3, 2)) == 3


def test_a_default_run_logs_images_per_second_to_its_csv(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "model=mlp",
        "model.depth=1",
        "model.width=16",
        "data.train_size=320",
        "data.batch_size=32",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=3",
        "logger=csv",
        "callbacks.layer_stats=null",
    )
    assert train(cfg)["status"] == "completed"
    with open(tmp_path / "run" / "csv" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    rates = {int(r["step"]): float(r[throughput.METRIC]) for r in rows if r.get(throughput.METRIC)}
    loss_steps = {int(r["step"]) for r in rows if r.get("train/loss_step")}
    assert sorted(rates) == sorted(loss_steps) == [2, 5, 8, 11, 14, 17]  # 10 steps an epoch, 2 epochs
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values())
