"""W&B's service is started in a thread once the training stack is imported, for runs that log
to W&B, on process 0, once per process (trainlab.tracking.wandb_service)."""

from __future__ import annotations

import threading

import pytest
import wandb
from omegaconf import OmegaConf

from trainlab.tracking import wandb_service
from trainlab.tracking.wandb_service import start_wandb_service

WANDB = OmegaConf.create({"logger": {"csv": {"_target_": "x.CSV"}, "wandb": {"_target_": "x.W&B"}}})
CSV_ONLY = OmegaConf.create({"logger": {"csv": {"_target_": "x.CSV"}}})


@pytest.fixture
def setups(monkeypatch):
    """The threads wandb.setup ran in (it is not really called); no service started yet."""
    threads = []
    monkeypatch.setattr(wandb, "setup", lambda *a, **k: threads.append(threading.current_thread()))
    monkeypatch.setattr(wandb_service, "_started", False)
    return threads


def test_started_in_a_thread_of_its_own_once_per_process(setups):
    thread = start_wandb_service(WANDB, rank=0)
    thread.join(10)
    assert setups == [thread] and thread is not threading.main_thread() and thread.daemon
    assert start_wandb_service(WANDB, rank=0) is None  # the next job of a multirun: already running
    assert len(setups) == 1


@pytest.mark.parametrize(
    ("cfg", "rank"),
    [(CSV_ONLY, 0), (WANDB, 1), (OmegaConf.create({"logger": None}), 0), (OmegaConf.create({}), 0)],
    ids=["csv logger only", "process 1 of DDP", "logger=none", "no logger key"],
)
def test_not_started_where_no_wandb_run_follows(setups, cfg, rank):
    assert start_wandb_service(cfg, rank) is None
    assert setups == []


def test_a_failed_start_is_left_to_the_runs_start(monkeypatch, caplog):
    def fails():
        raise RuntimeError("wandb-core not found")

    monkeypatch.setattr(wandb, "setup", fails)
    monkeypatch.setattr(wandb_service, "_started", False)
    with caplog.at_level("DEBUG", logger=wandb_service.__name__):
        start_wandb_service(WANDB, rank=0).join(10)
    assert "wandb-core not found" in caplog.text
