"""`python -m trainlab.lr_find`: the LR range test on the composed study leaves its plot and data."""

from __future__ import annotations

import json
import math

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from trainlab.lr_find import lr_find
from trainlab.models.classifier import Classifier

TINY = [
    "data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv",
    "data.train_size=128", "data.batch_size=16",
    "+lr_find.min_lr=1e-4", "+lr_find.max_lr=10.0", "+lr_find.num_training=30",
]  # fmt: skip


@pytest.mark.slow
def test_lr_find_writes_plot_and_data_and_a_usable_override(make_cfg, tmp_path):
    result = lr_find(make_cfg(*TINY))
    run = tmp_path / "run"
    assert (run / "lr_find.png").stat().st_size > 0
    written = json.loads((run / "lr_find.json").read_text())
    assert written == result
    assert 12 <= len(written["lr"]) == len(written["loss"]) <= 30  # stops early only on divergence
    assert 1e-4 <= written["lr"][0] < written["lr"][-1] <= 10.0
    suggestion = written["suggestion"]
    assert math.isfinite(suggestion) and 1e-4 <= suggestion <= 10.0 and suggestion in written["lr"]
    (override,) = OverridesParser.create().parse_overrides([result["override"]])
    assert override.key_or_group == "optimizer.lr"
    assert make_cfg(*TINY, result["override"], run="again").optimizer.lr == pytest.approx(
        suggestion, rel=1e-3
    )


def test_the_module_lr_is_the_optimizer_lr_the_tuner_can_set(make_cfg):
    from trainlab.builders import build_datamodule, build_model

    cfg = make_cfg(*TINY[:-3], "optimizer=sgd", "optimizer.lr=0.05", "scheduler=none")
    model, _ = build_model(cfg, build_datamodule(cfg))
    assert isinstance(model, Classifier) and model.lr == 0.05
    model.lr = 0.2  # what Lightning's lr_find(update_attr=True, attr_name="lr") does
    assert model.configure_optimizers().param_groups[0]["lr"] == pytest.approx(0.2)
