"""The six ready studies of conf/experiment: each composes, runs end to end with tiny overrides, and
shows its paper's effect in the layer statistics (at init: one step) or in a short run (slow)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from trainlab.eval import evaluate, load_checkpoint
from trainlab.models.classifier import Classifier
from trainlab.models.rebuildable import CLASS_KEY
from trainlab.models.regression import NoisyRegression, ridge_solution
from trainlab.train import train

STUDIES = ("deep_relu_init", "saturation", "symmetry", "dead_relu", "fixup_vs_norm", "noise_as_l2")
TINY = [
    "logger=none",
    "trainer.max_steps=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "callbacks.layer_stats.every_n_steps=1",
]
AT_INIT = ["logger=none", "trainer.max_steps=1", "test=false", "++trainer.limit_val_batches=0"]


@pytest.fixture
def run_study(make_cfg):
    """run_study(name, *overrides, run=...) -> (summary, layer stats rows)."""

    def run(name: str, *overrides: str, run: str = "run") -> tuple[dict, list[dict]]:
        cfg = make_cfg(f"experiment={name}", *overrides, run=run)
        summary = train(cfg)
        path = Path(cfg.paths.output_dir) / "layer_stats.csv"
        rows = list(csv.DictReader(path.open())) if path.is_file() else []
        return summary, rows

    return run


def stat(rows: list[dict], name: str, step: int = 0) -> dict[int, float]:
    """{depth: value} of one statistic at one step."""
    return {int(r["depth"]): float(r["value"]) for r in rows if r["stat"] == name and int(r["step"]) == step}


@pytest.mark.parametrize("name", STUDIES)
def test_study_composes(make_cfg, name):
    cfg = make_cfg(f"experiment={name}")
    assert name in cfg.tags
    assert cfg.norm._target_ == "trainlab.norm.none"  # every study compares nets without normalisation
    expected = {
        "deep_relu_init": ("trainlab.models.mlp.MLP", 30),
        "saturation": ("trainlab.models.mlp.MLP", 5),
        "symmetry": ("trainlab.models.mlp.MLP", 2),
        "dead_relu": ("trainlab.models.mlp.MLP", 5),
        "fixup_vs_norm": ("trainlab.models.resnet.ResNet", 12),
        "noise_as_l2": ("trainlab.models.mlp.MLP", 0),
    }[name]
    assert (cfg.model._target_, cfg.model.depth) == expected


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_end_to_end(run_study, name):
    summary, rows = run_study(name, *TINY)
    assert summary["status"] == "completed" and summary["global_step"] == 2
    if name == "noise_as_l2":  # a linear model: no activation, no layer statistics
        assert rows == [] and summary["metrics"]["test/mse"] > 0
    else:
        assert {int(r["step"]) for r in rows} == {0, 1}


def test_deep_relu_init_xavier_vanishes_he_keeps(run_study):
    _, xavier = run_study("deep_relu_init", "init=xavier_normal", *AT_INIT, run="xavier")
    _, he = run_study("deep_relu_init", "init=kaiming_normal", *AT_INIT, run="he")
    x_act, h_act = stat(xavier, "act_std"), stat(he, "act_std")
    assert len(x_act) == len(h_act) == 30
    # Xavier: Var halves per ReLU layer, 2^-15 in std over 30 layers; He: about constant
    assert x_act[30] < 1e-4 and x_act[30] / x_act[1] < 1e-3
    assert 0.2 < h_act[30] < 3 and 0.2 < h_act[30] / h_act[1] < 3
    # gradients reaching the first layer: ~1e-8 with Xavier, ~1e-3 with He
    assert stat(xavier, "grad_std")[1] < 1e-6 < 1e-4 < stat(he, "grad_std")[1]


def test_saturation_standard_init_shrinks_with_depth_xavier_less(run_study):
    _, standard = run_study("saturation", "init=default", *AT_INIT, run="standard")
    _, xavier = run_study("saturation", "init=xavier_uniform", *AT_INIT, run="xavier")
    s_act, x_act = stat(standard, "act_std"), stat(xavier, "act_std")
    assert s_act[5] / s_act[1] < 0.2  # Var[W] = 1/(3 n): about a factor 1/sqrt(3) per layer
    assert x_act[5] / x_act[1] > 0.35
    s_grad, x_grad = stat(standard, "grad_std"), stat(xavier, "grad_std")
    assert s_grad[5] / s_grad[1] > 2 * x_grad[5] / x_grad[1]  # gradients grow more towards the top
    assert set(stat(standard, "saturated")) == {1, 2, 3, 4, 5}  # tanh: saturation is measured


def test_symmetry_constant_init_keeps_units_identical(run_study):
    overrides = (
        "logger=none",
        "trainer.max_steps=30",
        "test=false",
        "callbacks.layer_stats.every_n_steps=10",
    )
    _, constant_rows = run_study("symmetry", "init=constant", *overrides, run="constant")
    _, random_rows = run_study("symmetry", "init=xavier_normal", *overrides, run="random")
    same = [float(r["value"]) for r in constant_rows if r["stat"] == "unit_diversity"]
    different = [float(r["value"]) for r in random_rows if r["stat"] == "unit_diversity"]
    assert len(same) == len(different) == 3 * 2  # steps 0, 10, 20; two layers
    assert max(same) < 1e-5 and min(different) > 0.5
    # the constant net does train (its weights move), it just never breaks the symmetry
    assert min(stat(constant_rows, "update_ratio", 10).values()) > 1e-4


def test_dead_relu_negative_bias_kills_units_at_init(run_study):
    _, good = run_study("dead_relu", "init.bias=0", *AT_INIT, run="good")
    _, bad = run_study("dead_relu", "init.bias=-3", *AT_INIT, run="bad")
    assert max(stat(good, "dead").values()) < 0.2
    dead = stat(bad, "dead")
    assert dead[1] > 0.3 and [dead[d] for d in (2, 3, 4, 5)] == [1.0] * 4


def test_fixup_vs_norm_he_init_explodes_fixup_starts_at_identity(run_study):
    _, he = run_study("fixup_vs_norm", "init=kaiming_normal", *AT_INIT, run="he")
    _, fixup = run_study("fixup_vs_norm", "init=fixup", *AT_INIT, run="fixup")
    he_act = stat(he, "act_std")
    assert he_act[13] / he_act[2] > 10  # every residual block adds its branch's variance
    fixup_grad = stat(fixup, "grad_std")
    assert max(fixup_grad.values()) == 0.0  # zero classifier: no gradient below it at step 0


@pytest.mark.slow
def test_fixup_vs_norm_no_norm_diverges_fixup_trains(run_study):
    short = ("logger=none", "trainer.max_epochs=6", "callbacks.layer_stats.every_n_steps=100")
    diverged, _ = run_study("fixup_vs_norm", "init=kaiming_normal", *short, run="he")
    fixup, _ = run_study("fixup_vs_norm", "init=fixup", *short, run="fixup")
    assert diverged["status"] == "diverged"
    assert fixup["status"] == "completed" and fixup["metrics"]["test/acc"] > 0.7


@pytest.mark.slow
def test_noise_as_l2_noise_and_weight_decay_reach_the_ridge_solution(run_study):
    results = {}
    for regulariser in ("noise", "l2", "weight_decay"):
        summary, _ = run_study(
            "noise_as_l2",
            "module.sigma=1",
            f"module.regulariser={regulariser}",
            "logger=none",
            "trainer.max_epochs=20",
            run=regulariser,
        )
        results[regulariser] = summary["metrics"]
    ridge = results["noise"]["weights/ridge_norm"]
    assert ridge == pytest.approx(results["l2"]["weights/ridge_norm"])
    for regulariser, metrics in results.items():
        assert metrics["weights/norm"] == pytest.approx(ridge, rel=0.03), regulariser
    assert results["l2"]["weights/norm"] == pytest.approx(results["weight_decay"]["weights/norm"], rel=1e-4)


def test_ridge_solution_is_the_minimiser():
    """The gradient of mean ||W x + b - t||^2 + penalty ||W||^2 vanishes at ridge_solution."""
    torch.manual_seed(0)
    x, t = torch.randn(50, 6, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    weight, bias = ridge_solution(x, t, penalty=0.7)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    objective = (x @ weight.T + bias - t).square().sum(1).mean() + 0.7 * weight.square().sum()
    objective.backward()
    assert weight.grad.abs().max() < 1e-10 and bias.grad.abs().max() < 1e-10


def test_noisy_regression_expected_loss_is_the_penalised_loss():
    """Bishop's identity on a linear net: the mean over many noise draws of the noisy loss equals
    the clean loss plus sigma^2 ||W||^2."""
    network = {
        "model": {"_target_": "trainlab.models.mlp.MLP", "depth": 0},
        "norm": {"_target_": "trainlab.norm.none", "_partial_": True},
        "activation": {"_target_": "torch.nn.ReLU", "_partial_": True},
        "input_shape": [1, 2, 2],
        "num_classes": 3,
    }
    model = NoisyRegression(network, {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}, sigma=0.5)
    torch.manual_seed(0)
    x, labels = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 1])
    clean, _ = model._mse(x, labels)
    with torch.no_grad():
        noisy = torch.stack([model._mse(x + 0.5 * torch.randn_like(x), labels)[0] for _ in range(20000)])
    expected = clean + 0.25 * model.squared_weights()
    assert noisy.mean().item() == pytest.approx(expected.item(), rel=0.02)


def test_a_study_module_trains_and_evaluates_from_its_checkpoint(run_study, make_cfg, tmp_path):
    """experiment=noise_as_l2 names its own LightningModule (`module`): trainlab.train builds it,
    its checkpoint names its class, and trainlab.eval rebuilds that class, not the classifier."""
    run_study("noise_as_l2", *TINY, "module.sigma=0.25")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert (
        torch.load(checkpoint, weights_only=True)[CLASS_KEY] == "trainlab.models.regression.NoisyRegression"
    )
    model, _ = load_checkpoint(checkpoint)
    assert isinstance(model, NoisyRegression) and model.hparams.sigma == 0.25
    result = evaluate(make_cfg(f"ckpt_path={checkpoint}", run="eval", config_name="eval"))
    assert result["status"] == "completed" and result["metrics"]["test/mse"] > 0


def test_checkpoints_without_a_class_name_load_as_the_classifier(make_cfg, tmp_path):
    """Checkpoints written before modules named their class are the classifier's."""
    train(make_cfg("data=digits", "model=mlp", "model.depth=1", "model.width=8", *TINY))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert state.pop(CLASS_KEY) == "trainlab.models.classifier.Classifier"
    torch.save(state, tmp_path / "old.ckpt")
    model, _ = load_checkpoint(tmp_path / "old.ckpt")
    assert type(model) is Classifier
