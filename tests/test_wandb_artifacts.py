"""Checkpoints as W&B artifacts (logger.wandb.log_model), also offline; read from the .wandb files."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.train import train
from trainlab.utils.config import ConfigError

from conftest import wait_for_wandb_exit, wandb_records

TINY = [
    "data=digits",
    "model=mlp",
    "model.depth=1",
    "model.width=16",
    "data.train_size=200",
    "logger=wandb",
    "logger.wandb.system_stats=false",
    "logger.wandb.console=off",
    "callbacks.layer_stats=null",
    "callbacks.augment_preview=null",
]


def _artifacts(run_dir) -> list:
    """The checkpoint artifacts (W&B stores a logged table as an artifact too, of type run_table)."""
    wait_for_wandb_exit(run_dir)
    records = [r.artifact for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "artifact"]
    return [a for a in records if a.type == "model"]


def test_log_model_offline_logs_best_and_last_with_what_they_hold(make_cfg, tmp_path):
    summary = train(make_cfg(*TINY, "trainer.max_epochs=2", "logger.wandb.log_model=true"))
    assert summary["status"] == "completed"
    artifacts = _artifacts(tmp_path / "run")
    by_role = {}
    for artifact in artifacts:
        metadata = json.loads(artifact.metadata)
        by_role[metadata["checkpoint"]] = (artifact, metadata)
    assert set(by_role) == {"best", "last"}
    best, best_meta = by_role["best"]
    last, last_meta = by_role["last"]
    assert best.name.startswith("model-") and "best" in best.aliases
    assert "last" in last.aliases and last_meta["filename"] == "last.ckpt"
    # the metadata names the checkpoint the file holds: its own step, epoch and val/acc
    best_file = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    assert best_meta["step"] == best_file["global_step"] and best_meta["epoch"] == best_file["epoch"]
    assert best_meta["monitor"] == "val/acc" and best_meta["filename"] == best_file_name(summary)
    assert last_meta["step"] == summary["global_step"] and last_meta["epoch"] == 1
    assert best_meta["val/acc"] == pytest.approx(max_val_acc(tmp_path / "run"), abs=1e-6)
    assert last_meta["val/acc"] == pytest.approx(summary["metrics"]["val/acc"], abs=1e-6)


def best_file_name(summary: dict) -> str:
    return summary["best_checkpoint"].rsplit("/", 1)[-1]


def max_val_acc(run_dir) -> float:
    import pandas as pd

    return float(pd.read_csv(run_dir / "csv" / "metrics.csv")["val/acc"].max())


def test_without_log_model_no_artifact_is_logged(make_cfg, tmp_path):
    train(make_cfg(*TINY, "trainer.max_epochs=1", "test=false"))
    assert _artifacts(tmp_path / "run") == []


def test_log_model_takes_only_false_true_or_all(make_cfg):
    from trainlab.tracking.loggers import wandb_logger

    with pytest.raises(ConfigError, match=r"logger\.wandb\.log_model='best'.*false, true or all"):
        wandb_logger(offline=True, log_model="best")


def test_log_model_all_logs_each_checkpoint_as_it_is_written(make_cfg, tmp_path):
    summary = train(make_cfg(*TINY, "trainer.max_epochs=2", "logger.wandb.log_model=all", "test=false"))
    metadata = [json.loads(a.metadata) for a in _artifacts(tmp_path / "run")]
    last_steps = [m["step"] for m in metadata if m["checkpoint"] == "last"]
    assert last_steps == [summary["global_step"] // 2, summary["global_step"]]  # one per epoch
    assert [m["epoch"] for m in metadata if m["checkpoint"] == "last"] == [0, 1]
    assert metadata[0]["checkpoint"] == "best" and metadata[0]["epoch"] == 0  # the first best, at once
