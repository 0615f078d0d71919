"""The bn_mnist study and the norm configs through the real entry point; the unit-percentile callback."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn
from torch.testing import assert_close

from trainlab.callbacks.unit_percentiles import UnitInputPercentiles
from trainlab.utils.compose import compose_run_config

CONF = Path(__file__).resolve().parents[1] / "conf"
QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_model_summary=false", "trainer.accelerator=cpu"]
os.environ["WANDB_MODE"] = "offline"


def compose_run(overrides: list[str], run_dir: Path) -> DictConfig:
    """The config of `python -m trainlab.train <overrides>`, with its run directory at run_dir."""
    return compose_run_config([*QUIET, *overrides], run_dir)


def test_bn_mnist_composes_the_paper_setup(tmp_path):
    cfg = compose_run(["experiment=bn_mnist", "norm=none"], tmp_path)
    assert cfg.data.source._target_.endswith("mnist5k") and cfg.data.batch_size == 60
    assert cfg.model._target_.endswith("MLP") and (cfg.model.depth, cfg.model.width) == (3, 100)
    assert cfg.activation._target_ == "torch.nn.Sigmoid"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.0
    assert cfg.callbacks.unit_percentiles.activation == "torch.nn.Sigmoid"
    assert cfg.norm._target_ == "trainlab.norm.none"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["callbacks=precise_bn"], ["model_checkpoint", "lr_monitor", "precise_bn"]),
        (["callbacks=[early_stopping,precise_bn]"], ["model_checkpoint", "early_stopping", "precise_bn"]),
    ],
)
def test_precise_bn_adds_to_the_default_callbacks(tmp_path, overrides, names):
    cfg = compose_run(overrides, tmp_path)
    assert set(names) <= set(cfg.callbacks)
    assert cfg.callbacks.precise_bn._target_ == "trainlab.callbacks.precise_bn.PreciseBN"


@pytest.mark.slow
def test_bn_mnist_runs_and_plots_the_unit_percentiles(tmp_path):
    from trainlab.train import train

    cfg = compose_run(
        [
            "experiment=bn_mnist",
            "norm=batchnorm_scratch",
            "logger=csv",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=12",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
            "trainer.log_every_n_steps=1",
            "callbacks=precise_bn",
            "callbacks.precise_bn.num_batches=4",
        ],
        tmp_path / "run",
    )
    summary = train(cfg)
    assert summary["status"] == "completed", summary.get("error")
    run_dir = tmp_path / "run"
    png = run_dir / "unit_input_percentiles.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("train/unit0_input_p50")]
    assert len(logged) == 12  # one row per training step
    for row in logged:
        p15, p50, p85 = (float(row[f"train/unit0_input_p{q}"]) for q in (15, 50, 85))
        assert p15 <= p50 <= p85


TINY_CNN = ["model=cnn", "model.width=8", "model.depth=1"]
TINY_RESNET = ["model=resnet", "model.width=8", "model.depth=2", "model.stages=2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        [*TINY_CNN, "norm=batchnorm_scratch", "norm.position=post_act"],
        [*TINY_CNN, "norm=ghost_batchnorm", "callbacks=precise_bn"],
        [*TINY_CNN, "norm=layernorm"],
        [*TINY_CNN, "norm=groupnorm", "norm.groups=8"],
        [*TINY_CNN, "norm=instancenorm"],
        [*TINY_RESNET, "norm=batchnorm_scratch", "callbacks=precise_bn"],
        ["model=mlp", "model.width=32", "norm=ghost_batchnorm", "norm.position=post_act"],
    ],
    ids=lambda o: " ".join(o),
)
def test_norms_run_through_the_entry_point(tmp_path, overrides):
    from trainlab.train import train

    cfg = compose_run(["debug=fdr", *overrides], tmp_path / "run")
    summary = train(cfg)
    assert summary["status"] == "completed", summary.get("error")


@pytest.mark.slow
def test_a_bad_norm_option_fails_the_run_with_the_option_named(tmp_path):
    from trainlab.train import train

    cfg = compose_run(
        ["debug=fdr", "model=cnn", "model.width=8", "norm=groupnorm", "norm.groups=3"], tmp_path / "run"
    )
    with pytest.raises(Exception, match="norm.groups=3 must divide the 8 channels"):
        train(cfg)


def test_percentiles_are_those_of_the_units_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    callback = UnitInputPercentiles(activation="torch.nn.Sigmoid", unit=2)
    callback.setup(None, net, "fit")
    x = torch.randn(64, 5)
    net(x)
    assert callback._latest is None  # not recording outside training batches
    callback._recording = True
    net(x)
    pre_activation = net[2](net[1](net[0](x)))[:, 2]  # the last sigmoid's input, unit 2
    expected = torch.quantile(pre_activation, torch.tensor([0.15, 0.50, 0.85]))
    assert_close(torch.tensor(callback._latest), expected)
    callback.teardown(None, net, "fit")


def test_percentile_plot_is_written(tmp_path):
    callback = UnitInputPercentiles()
    callback.steps, callback.values = [1, 2, 3], [[-1.0, 0.0, 1.0], [-1.2, 0.1, 1.1], [-1.1, 0.0, 0.9]]
    path = callback.plot(tmp_path / "plot.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_percentile_callback_errors_name_the_fix():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"no torch.nn.Sigmoid module.*activation"):
        UnitInputPercentiles(activation="torch.nn.Sigmoid").setup(None, net, "fit")
    callback = UnitInputPercentiles(activation="torch.nn.ReLU", unit=7)
    callback.setup(None, net, "fit")
    callback._recording = True
    with pytest.raises(ValueError, match=r"unit=7, but the layer has 3 units"):
        net(torch.randn(4, 3))
    with pytest.raises(ValueError, match="percentiles"):
        UnitInputPercentiles(percentiles=[50, 150])
