"""Activations: every conf/activation option builds, works in mlp, cnn and resnet, and sets the gain."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from trainlab.activations import Maxout
from trainlab.init import core, schemes
from trainlab.layers import traits
from trainlab.models.factory import build_network
from trainlab.utils.config import check_arguments

CONF = Path(__file__).resolve().parents[1] / "conf"
ACTIVATIONS = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "maxout", "gelu", "silu"]


def activation_cfg(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "activation" / f"{name}.yaml"))
    return {**cfg, **overrides}


def test_the_contract_options_exist():
    assert {p.stem for p in (CONF / "activation").glob("*.yaml")} >= set(ACTIVATIONS)


@pytest.mark.parametrize(
    ("name", "kind", "knobs"),
    [
        ("relu", nn.ReLU, {}),
        ("leaky_relu", nn.LeakyReLU, {"negative_slope": 0.01}),
        ("elu", nn.ELU, {"alpha": 1.0}),
        ("sigmoid", nn.Sigmoid, {}),
        ("tanh", nn.Tanh, {}),
        ("maxout", Maxout, {"pieces": 2}),
        ("gelu", nn.GELU, {"approximate": "none"}),
        ("silu", nn.SiLU, {}),
    ],
)
def test_each_option_is_a_zero_argument_factory_with_its_knobs(name, kind, knobs):
    cfg = activation_cfg(name)
    check_arguments(cfg, "activation")
    module = instantiate(cfg)()
    assert type(module) is kind
    for key, value in knobs.items():
        assert getattr(module, key) == value


def test_knobs_reach_the_module():
    assert instantiate(activation_cfg("leaky_relu", negative_slope=0.2))().negative_slope == 0.2
    assert instantiate(activation_cfg("elu", alpha=0.5))().alpha == 0.5
    assert instantiate(activation_cfg("maxout", pieces=4))().pieces == 4


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize(
    ("model", "input_shape"),
    [
        ({"_target_": "trainlab.models.mlp.MLP", "depth": 2, "width": 12}, (1, 8, 8)),
        ({"_target_": "trainlab.models.cnn.CNN", "depth": 2, "width": 4}, (3, 8, 8)),
        ({"_target_": "trainlab.models.resnet.ResNet", "depth": 2, "width": 4, "stages": 2}, (3, 8, 8)),
    ],
    ids=["mlp", "cnn", "resnet"],
)
@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_every_activation_works_in_every_model(name, model, input_shape, norm):
    net = build_network(
        model,
        {"_target_": f"trainlab.norm.{norm}", "_partial_": True, "position": "pre_act"},
        activation_cfg(name),
        input_shape,
        num_classes=5,
    )
    schemes.kaiming_normal(net)  # any init with any activation
    out = net(torch.randn(6, *input_shape))
    assert out.shape == (6, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


# --- Maxout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_maxout_is_the_max_over_groups_of_k_channels(pieces):
    maxout = Maxout(pieces)
    assert maxout.width_multiplier == pieces
    vectors = torch.randn(5, 4 * pieces)
    expected = torch.stack([vectors[:, c * pieces : (c + 1) * pieces].max(1).values for c in range(4)], 1)
    torch.testing.assert_close(maxout(vectors), expected)
    maps = torch.randn(2, 3 * pieces, 4, 5)
    expected = torch.stack([maps[:, c * pieces : (c + 1) * pieces].max(1).values for c in range(3)], 1)
    assert maxout(maps).shape == (2, 3, 4, 5)
    torch.testing.assert_close(maxout(maps), expected)


def test_maxout_makes_the_layer_before_it_k_times_wider():
    pieces = 3
    for model, shape in [
        ({"_target_": "trainlab.models.mlp.MLP", "depth": 2, "width": 10}, (1, 8, 8)),
        ({"_target_": "trainlab.models.cnn.CNN", "depth": 1, "width": 6}, (1, 8, 8)),
        ({"_target_": "trainlab.models.resnet.ResNet", "depth": 1, "width": 6, "stages": 1}, (1, 8, 8)),
    ]:
        net = build_network(
            model,
            {"_target_": "trainlab.norm.none", "_partial_": True},
            activation_cfg("maxout", pieces=pieces),
            shape,
            4,
        )
        modules = list(net.modules())
        checked = 0
        final = getattr(net, "final_act", None)  # resnet's last Maxout pools existing channels
        if final is not None:
            assert net.head.in_features == model["width"] // pieces
        for i, module in enumerate(modules):
            if isinstance(module, Maxout) and module is not final:
                layer = [m for m in modules[:i] if isinstance(m, nn.Linear | nn.Conv2d)][-1]
                out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
                assert out == pieces * model["width"]
                checked += 1
        assert checked == 2  # two hidden layers, two convs, stem + one residual branch
        assert net(torch.randn(2, *shape)).shape == (2, 4)


def test_maxout_bad_input():
    with pytest.raises(ValueError, match=r"activation.pieces=0 must be an integer >= 1"):
        Maxout(0)
    with pytest.raises(ValueError, match="Maxout with 2 pieces needs a multiple of 2 features, got 5"):
        Maxout(2)(torch.randn(3, 5))


# --- gains: from the network's activation, as torch.nn.init.calculate_gain -------------------------


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        (nn.ReLU(), math.sqrt(2)),
        (nn.LeakyReLU(0.2), math.sqrt(2 / (1 + 0.2**2))),
        (nn.LeakyReLU(), math.sqrt(2 / (1 + 0.01**2))),
        (nn.Tanh(), 5 / 3),
        (nn.Sigmoid(), 1.0),
        (nn.SELU(), 3 / 4),
        # documented choices: ReLU-shaped units take ReLU's gain, Maxout a linear unit's
        (nn.ELU(), math.sqrt(2)),
        (nn.GELU(), math.sqrt(2)),
        (nn.SiLU(), math.sqrt(2)),
        (Maxout(2), 1.0),
        (nn.Identity(), 1.0),  # no activation: linear
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_gain_per_activation(activation, expected):
    net = nn.Sequential(nn.Linear(1024, 2048), activation)
    assert core.gain(net) == pytest.approx(expected, rel=1e-12)
    name, param = traits.init_nonlinearity(activation) or ("linear", None)
    assert core.gain(net) == pytest.approx(nn.init.calculate_gain(name, param), rel=1e-12)
    torch.manual_seed(0)
    schemes.kaiming_normal(net)  # He: std = gain / sqrt(fan_in)
    assert net[0].weight.std().item() == pytest.approx(expected / math.sqrt(1024), rel=0.01)


def test_gain_of_built_networks_follows_the_activation_config():
    expected = {
        "relu": nn.init.calculate_gain("relu"),
        "leaky_relu": nn.init.calculate_gain("leaky_relu", 0.2),
        "tanh": nn.init.calculate_gain("tanh"),
        "sigmoid": nn.init.calculate_gain("sigmoid"),
        "maxout": 1.0,
    }
    for name, value in expected.items():
        cfg = activation_cfg(name, **({"negative_slope": 0.2} if name == "leaky_relu" else {}))
        net = build_network(
            {"_target_": "trainlab.models.mlp.MLP", "depth": 1, "width": 8},
            {"_target_": "trainlab.norm.batchnorm", "_partial_": True},
            cfg,
            (1, 8, 8),
            3,
        )
        assert core.gain(net) == pytest.approx(value)


def test_nonlinearity_override():
    net = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU())
    assert core.gain(net, "tanh") == pytest.approx(5 / 3)
    assert core.gain(net, "linear") == 1.0
    assert core.gain(net, "leaky_relu") == pytest.approx(
        math.sqrt(2 / (1 + 0.01**2))
    )  # torch's default slope
    assert core.gain(nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(0.3)), "leaky_relu") == pytest.approx(
        math.sqrt(2 / 1.09)
    )
    torch.manual_seed(0)
    schemes.kaiming_uniform(net, nonlinearity="tanh")
    bound = 5 / 3 * math.sqrt(3 / 2048)
    assert net[0].weight.abs().max().item() == pytest.approx(bound, rel=0.01)
    schemes.xavier_normal(net, nonlinearity="auto")  # Glorot with the ReLU gain when asked
    assert net[0].weight.var().item() == pytest.approx(2 * 2 / (2048 + 1024), rel=0.03)


def test_mixed_activations_use_the_most_frequent_and_warn(caplog):
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.ReLU())
    with caplog.at_level("WARNING"):
        assert core.gain(net) == pytest.approx(5 / 3)
    assert "mixes activations" in caplog.text and "init.nonlinearity" in caplog.text
