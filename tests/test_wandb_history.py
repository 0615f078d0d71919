"""What a W&B run's history holds: every metric at its step, the metrics of a step in one row (one
`wandb.log` a step, trainlab.tracking.loggers.WandbLogger); read from the offline `.wandb` files."""

from __future__ import annotations

import csv
import json

from trainlab.tracking.loggers import WandbLogger
from trainlab.train import train

from conftest import wandb_records

TINY = [
    "data=digits",
    "model=mlp",
    "model.depth=1",
    "model.width=16",
    "data.train_size=320",  # 5 batches of 64 an epoch
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=2",
    "logger=[wandb,csv]",
    "logger.wandb.system_stats=false",
    "logger.wandb.console=off",
    "callbacks.layer_stats.every_n_steps=4",
    "callbacks.layer_stats.table=false",
    "callbacks.augment_preview=null",
]


def _history(run_dir) -> list[dict]:
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            )
    return rows


def test_each_step_is_one_row_holding_all_of_its_metrics(make_cfg, tmp_path):
    summary = train(make_cfg(*TINY))
    assert summary["status"] == "completed"
    history = _history(tmp_path / "run")
    # the rows of the training's metrics: one per step, in the order of the steps (a
    # layer-statistics sample, read back at a later logging step, may add a row of its own)
    rows = [r for r in history if any(k.startswith(("train/", "val/", "lr-")) for k in r)]
    steps = [r["trainer/global_step"] for r in rows]
    assert steps == sorted(set(steps)), f"not one row per step, in their order: {steps}"
    by_step = {r["trainer/global_step"]: r for r in rows}
    # a logging step: the module's loss and the throughput callback's rate together
    # (the step axis counts the steps before: the logging step after 2 steps is step 1)
    assert {"train/loss_step", "train/images_per_sec"} <= set(by_step[1])
    # an epoch's end (after 5 steps): its last step's training and validation metrics; the next
    # epoch's learning rate with the next step's
    assert {"train/loss_epoch", "train/acc", "val/acc", "val/loss", "layer_stats_act_std/L01"} <= set(
        by_step[4]
    )  # and the layer-statistics sample of step 4
    assert {"lr-Adam", "train/loss_step"} <= set(by_step[5])
    # the test's metrics, sent when the test ends
    assert any("test/acc" in r for r in history)
    # the same values, at the same steps, as the CSV logger's (which writes each call's as it comes)
    with open(next((tmp_path / "run").glob("csv/**/metrics.csv"))) as file:
        for line in csv.DictReader(file):
            for name, value in line.items():
                if value and name not in ("step", "epoch") and int(line["step"]) in by_step:
                    assert by_step[int(line["step"])][name] == float(value), (name, line["step"])


def test_kept_metrics_are_sent_before_another_steps_and_by_flush(monkeypatch):
    sent = []
    monkeypatch.setattr(
        "lightning.pytorch.loggers.wandb.WandbLogger.log_metrics",
        lambda self, metrics, step=None: sent.append((dict(metrics), step)),
    )
    logger = WandbLogger(offline=True)
    logger.log_metrics({"a": 1.0}, step=3)
    logger.log_metrics({"s": 0.5}, step=0)  # an earlier step's (a layer-statistics sample)
    logger.log_metrics({"b": 2.0}, step=3)
    assert sent == []
    logger.log_metrics({"a": 3.0}, step=4)
    assert sent == [({"s": 0.5}, 0), ({"a": 1.0, "b": 2.0}, 3)]
    logger.log_metrics({"c": 4.0})  # no step: what is kept first, then this at once
    assert sent[2:] == [({"a": 3.0}, 4), ({"c": 4.0}, None)]
    logger.log_metrics({"d": 5.0}, step=5)
    logger.finalize("failed")
    assert sent[-1] == ({"d": 5.0}, 5)
    logger.flush()  # nothing kept: nothing sent
    assert len(sent) == 5
