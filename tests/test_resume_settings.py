"""A resume does what its config records: another network is named before any weight loads,
another optimizer class is refused, changed optimizer settings are applied, and a longer run
extends the schedule (trainlab.checkpoints.resume_check, trainlab.callbacks.resumed_settings)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch.optim.lr_scheduler import LambdaLR

from trainlab.callbacks.resumed_settings import _scale_rates, changed_settings
from trainlab.checkpoints.resume_check import check_resumable, differences
from trainlab.models.classifier import Classifier
from trainlab.train import train
from trainlab.utils.config import ConfigError

from conftest import QUIET, compose_config

# 300 examples in batches of 64: 5 optimizer steps an epoch; adam at 3e-3, cosine to 0.
TINY = [
    *QUIET,
    "data=digits",
    "data.train_size=300",
    "model=mlp",
    "model.depth=1",
    "model.width=32",
    "logger=csv",
    "test=false",
    "callbacks.layer_stats=null",
    "callbacks.augment_preview=null",
    "callbacks.lr_monitor=null",
]
STEPS_PER_EPOCH, LR = 5, 3e-3


def cosine(step: int, total: int, lr: float = LR) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch run (10 steps, its cosine schedule ended at lr 0)."""
    root = tmp_path_factory.mktemp("finished")
    train(compose_config([*TINY, "trainer.max_epochs=2"], root / "run", log_dir=root))
    GlobalHydra.instance().clear()
    return root / "run" / "checkpoints" / "last.ckpt"


def resume(checkpoint: Path, tmp_path: Path, *overrides: str, monkeypatch=None) -> tuple[dict, list]:
    """Resume `checkpoint` in a run of its own; (summary, [(step, [lr of each group], first
    group's settings)] at the start of each resumed step)."""
    seen: list = []
    if monkeypatch is not None:

        def record(self, batch, batch_idx):
            groups = self.trainer.optimizers[0].param_groups
            seen.append((self.trainer.global_step, [g["lr"] for g in groups], dict(groups[0], params=None)))

        monkeypatch.setattr(Classifier, "on_train_batch_start", record, raising=False)
    cfg = compose_config(
        [*TINY, f"ckpt_path={checkpoint}", *overrides], tmp_path / "resumed", log_dir=tmp_path
    )
    return train(cfg), seen


# --- the network and the optimizer class, before anything loads ----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.width=64", "model.width: the checkpoint has 32, this run 64"),
        ("model.depth=2", "model.depth: the checkpoint has 1, this run 2"),
        ("data.classes=[0,1,2]", "the data's number of classes: the checkpoint has 10, this run 3"),
        ("model=cnn", "model._target_: the checkpoint has 'trainlab.models.mlp.MLP'"),
    ],
)
def test_another_network_is_named_before_any_weight_loads(finished, tmp_path, monkeypatch, override, named):
    loaded = []
    monkeypatch.setattr(Classifier, "on_load_checkpoint", lambda self, c: loaded.append(c), raising=False)
    with pytest.raises(ConfigError) as error:
        resume(finished, tmp_path, "trainer.max_epochs=3", override)
    assert named in str(error.value)
    assert "transfer.pretrained_ckpt" in str(error.value) and "size mismatch" not in str(error.value)
    assert not loaded  # refused before Lightning read the checkpoint


@pytest.mark.slow
def test_another_optimizer_class_is_refused(finished, tmp_path):
    with pytest.raises(
        ConfigError, match=r"optimizer: the checkpoint has torch.optim.Adam, this run torch.optim.SGD"
    ):
        resume(finished, tmp_path, "trainer.max_epochs=3", "optimizer=sgd")


def test_a_setting_that_changes_no_weight_is_a_warning():
    stored = {
        "network": {"model": {"_target_": "m.MLP", "width": 8, "dropout": 0.0}, "input_shape": [1, 8, 8]}
    }
    current = {
        "network": {"model": {"_target_": "m.MLP", "width": 8, "dropout": 0.5}, "input_shape": [1, 8, 8]}
    }
    shapes = {"net.head.weight": (10, 8)}
    checkpoint = {"hyper_parameters": stored, "state_dict": {"net.head.weight": torch.zeros(10, 8)}}
    warnings = check_resumable(checkpoint, current, shapes, "ckpt_path='x'")
    assert len(warnings) == 1 and "model.dropout: the checkpoint has 0.0, this run 0.5" in warnings[0]
    assert differences({"a": [1, 8, 8]}, {"a": (1, 8, 8)}) == []  # a list and a tuple alike
    # an old checkpoint without a network config: the tensors are named
    with pytest.raises(ConfigError, match=r"net.head.weight: \(10, 8\) in the checkpoint, \(10, 16\) here"):
        check_resumable({"state_dict": checkpoint["state_dict"]}, current, {"net.head.weight": (10, 16)}, "x")


# --- the horizon and the optimizer's settings, applied ------------------------------------------------


@pytest.mark.slow
def test_a_longer_run_extends_the_schedule(finished, tmp_path, monkeypatch, caplog):
    """README's example: a finished run resumed with more epochs trains them at the rates of a
    run planned for the new length, from the first resumed step on (not at the old end's 0)."""
    with caplog.at_level(logging.INFO, logger="trainlab.callbacks.resumed_settings"):
        summary, seen = resume(finished, tmp_path, "trainer.max_epochs=4", monkeypatch=monkeypatch)
    assert summary["status"] == "completed" and summary["global_step"] == 4 * STEPS_PER_EPOCH
    steps = [step for step, _, _ in seen]
    assert steps == list(range(10, 20))
    rates = [lrs[0] for _, lrs, _ in seen]
    assert rates == pytest.approx([cosine(step, 20) for step in steps], rel=1e-9)
    assert min(rates) > 0
    assert "planned for 10" in caplog.text and "schedule for 20 optimizer steps" in caplog.text


@pytest.mark.slow
def test_changed_optimizer_settings_are_applied(finished, tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="trainlab.callbacks.resumed_settings"):
        _, seen = resume(
            finished,
            tmp_path,
            "trainer.max_epochs=3",
            "optimizer.lr=0.01",
            "optimizer.weight_decay=0.1",
            "+optimizer.betas=[0.8,0.99]",  # not in the checkpoint's config: every group gets it
            monkeypatch=monkeypatch,
        )
    step, lrs, group = seen[0]
    assert step == 10
    assert lrs[0] == pytest.approx(cosine(10, 15, lr=0.01), rel=1e-9)
    assert group["initial_lr"] == pytest.approx(0.01)
    assert group["weight_decay"] == 0.1 and tuple(group["betas"]) == (0.8, 0.99)
    assert [lrs[0] for _, lrs, _ in seen] == pytest.approx([cosine(s, 15, lr=0.01) for s, _, _ in seen])
    assert "optimizer.lr=0.01 (the checkpoint's run had 0.003): applied" in caplog.text
    assert "optimizer.weight_decay=0.1" in caplog.text


def test_a_new_rate_keeps_each_groups_rate_relative_to_optimizer_lr():
    weights = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    optimizer = torch.optim.SGD(
        [
            {"params": [weights[0]], "lr": 0.1, "lr_mult": 1.0, "weight_decay": 1e-4},
            {"params": [weights[1]], "lr": 0.01, "lr_mult": 0.1, "weight_decay": 0.0},  # its own: kept
        ],
        lr=0.1,
    )
    schedule = LambdaLR(optimizer, lambda step: 0.5)
    optimizer.add_param_group({"params": [weights[2]], "lr": 0.02})  # e.g. unfrozen later
    _scale_rates(optimizer, schedule, old=0.1, new=0.2)
    assert schedule.base_lrs == pytest.approx([0.2, 0.02])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.01, 0.04])
    assert changed_settings(
        {"lr": 0.1, "weight_decay": 1e-4, "_target_": "a"}, {"lr": 0.1, "weight_decay": 0.0, "_target_": "b"}
    ) == {"weight_decay": (1e-4, 0.0)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.max_epochs=1", "trainer.max_epochs=1, but the checkpoint has already trained 2 epochs"),
        (
            "trainer.max_steps=4",
            "trainer.max_steps=4, but the checkpoint has already trained 10 optimizer steps",
        ),
    ],
)
def test_a_length_the_checkpoint_has_passed_is_refused(finished, tmp_path, override, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        resume(finished, tmp_path, override)


@pytest.mark.slow
def test_a_schedule_dropped_on_resume_leaves_the_base_rate(finished, tmp_path, monkeypatch):
    """scheduler=none after a cosine run: optimizer.lr from then on, not the cosine's last rate (0)."""
    _, seen = resume(finished, tmp_path, "trainer.max_epochs=3", "scheduler=none", monkeypatch=monkeypatch)
    assert [lrs[0] for _, lrs, _ in seen] == pytest.approx([LR] * STEPS_PER_EPOCH)


@pytest.mark.slow
def test_a_schedule_added_on_resume_starts_at_the_current_step(tmp_path, monkeypatch):
    """A constant-rate run resumed with scheduler=cosine: the rates of a cosine run at these steps,
    not a cosine restarted from step 0."""
    first = tmp_path / "first"
    train(compose_config([*TINY, "scheduler=none", "trainer.max_epochs=1"], first, log_dir=tmp_path))
    GlobalHydra.instance().clear()
    _, seen = resume(
        first / "checkpoints" / "last.ckpt", tmp_path, "trainer.max_epochs=2", monkeypatch=monkeypatch
    )
    assert [step for step, _, _ in seen] == list(range(5, 10))
    assert [lrs[0] for _, lrs, _ in seen] == pytest.approx(
        [cosine(step, 10) for step, _, _ in seen], rel=1e-9
    )
