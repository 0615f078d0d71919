"""Wrong inputs by class, each refused (or warned about) before training, naming the key and the fix:
batch and split sizes, zero or negative trainer knobs, list lengths, unreadable weight files,
user config files that fail to parse, names that escape logs/, wrong-typed summaries in a report,
missing extras, and likely mistakes (lr 0, a linear probe of a random backbone)."""

from __future__ import annotations

import logging

import pytest

from trainlab.checks import check_config
from trainlab.utils.config import ConfigError

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv", "trainer.max_epochs=1"]


# --- trainer knobs at 0 or below ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.accumulate_grad_batches=0", r"trainer.accumulate_grad_batches=0 is out of range: .*>= 1"),
        ("trainer.val_check_interval=0", r"trainer.val_check_interval=0 .*\(0, 1\].*>= 1"),
        ("trainer.val_check_interval=0.0", r"trainer.val_check_interval=0.0 "),
        ("trainer.val_check_interval=1.5", r"trainer.val_check_interval=1.5 "),
        ("trainer.log_every_n_steps=0", r"trainer.log_every_n_steps=0 "),
        ("trainer.check_val_every_n_epoch=0", r"trainer.check_val_every_n_epoch=0 "),
        ("trainer.max_epochs=-2", r"trainer.max_epochs=-2 .*-1 \(no epoch limit\)"),
        ("trainer.max_steps=-5", r"trainer.max_steps=-5 "),
        ("trainer.gradient_clip_val=-1", r"trainer.gradient_clip_val=-1 .*>= 0"),
        ("+trainer.limit_train_batches=-1", r"trainer.limit_train_batches=-1 "),
        ("+trainer.limit_val_batches=1.5", r"trainer.limit_val_batches=1.5 .*\[0.0, 1.0\]"),
        ("+trainer.num_sanity_val_steps=-3", r"trainer.num_sanity_val_steps=-3 "),
    ],
)
def test_trainer_knobs_out_of_range_are_refused(make_cfg, override, expected):
    with pytest.raises(ConfigError, match=expected):
        check_config(make_cfg(*TINY, override))


@pytest.mark.parametrize(
    "override",
    [
        "trainer.max_epochs=-1",
        "trainer.val_check_interval=0.5",
        "trainer.val_check_interval=3",
        "trainer.gradient_clip_val=0",
        "trainer.gradient_clip_val=1.0",
        "+trainer.limit_train_batches=0.25",
        "+trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=-1",
        "trainer.check_val_every_n_epoch=null",
    ],
)
def test_trainer_knobs_in_range_pass(make_cfg, override):
    check_config(make_cfg(*TINY, override))


def test_lr_zero_is_warned_about(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="trainlab"):
        check_config(make_cfg(*TINY, "optimizer.lr=0"))
    assert any("optimizer.lr=0" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"num_training": 0}, r"lr_find.num_training=0 must be an integer >= 13"),
        ({"num_training": 5}, r"lr_find.num_training=5 "),
        ({"num_training": 2.5}, r"lr_find.num_training=2.5 "),
        ({"min_lr": 0.0}, r"0 < lr_find.min_lr < lr_find.max_lr"),
        ({"steps": 100}, r"lr_find.steps: unknown setting; valid: min_lr, max_lr, num_training"),
    ],
)
def test_lr_find_settings_are_checked(settings, expected):
    from trainlab.lr_find import check_settings

    with pytest.raises(ConfigError, match=expected):
        check_settings(settings)
    assert check_settings({"num_training": 13})["num_training"] == 13


def test_lr_find_with_zero_steps_fails_before_building(make_cfg, tmp_path):
    from trainlab.lr_find import lr_find

    with pytest.raises(ConfigError, match="lr_find.num_training=0"):
        lr_find(make_cfg(*TINY, "+lr_find.num_training=0"))
    assert not (tmp_path / "run" / "lr_find.json").exists()
