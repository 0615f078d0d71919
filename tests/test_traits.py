"""What a module is (trainlab.layers.traits): one answer per question, for shipped modules as before,
and for a user's own norm or activation declared on the class, the same everywhere it is asked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.testing import assert_close

from trainlab import CONFIG_DIR
from trainlab.callbacks.layer_stats import LayerStats
from trainlab.callbacks.precise_bn import recompute_bn_stats
from trainlab.layers import traits
from trainlab.layers.stages import Split, blocks_and_head
from trainlab.transfer import TransferPolicy

# conf/activation/<name>.yaml -> (init nonlinearity, rectifier, saturation bounds), as before
ACTIVATIONS = {
    "relu": (("relu", None), True, None),
    "leaky_relu": (("leaky_relu", 0.01), True, None),
    "elu": (("relu", None), True, None),
    "gelu": (("relu", None), True, None),
    "silu": (("relu", None), True, None),
    "tanh": (("tanh", None), False, (-1.0, 1.0)),
    "sigmoid": (("sigmoid", None), False, (0.0, 1.0)),
    "maxout": (("linear", None), False, None),
}
# conf/norm/<name>.yaml -> (keeps running statistics, removes the channel mean), as before
NORMS = {
    "none": (False, False),
    "batchnorm": (True, True),
    "batchnorm_scratch": (True, True),
    "ghost_batchnorm": (True, True),
    "layernorm": (False, False),
    "groupnorm": (False, False),
    "instancenorm": (False, True),
}


def shipped(group: str, name: str):
    config = OmegaConf.load(Path(CONFIG_DIR) / group / f"{name}.yaml")
    config.pop("position", None)  # the norm's placement, read by the networks
    return instantiate(config)


# `native` builds no layer: a timm model keeps its own (tests/test_timm_axes.py)
NO_LAYER = {"native"}


def test_every_shipped_option_is_listed():
    for group, table in (("activation", ACTIVATIONS), ("norm", NORMS)):
        assert {p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml")} == set(table) | NO_LAYER, group


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_shipped_activations_are_classified_as_before(name):
    module = shipped("activation", name)()
    nonlinearity, rectifier, bounds = ACTIVATIONS[name]
    assert traits.init_nonlinearity(module) == nonlinearity
    assert traits.is_rectifier(module) is rectifier
    assert traits.saturation_bounds(module) == bounds
    assert traits.is_activation(module)
    assert not traits.keeps_running_stats(module) and not traits.removes_channel_mean(module)


# instance norm normalises feature maps only (on vectors it is an error, tested with the norms)
SHAPES = [(name, spatial) for name in NORMS for spatial in (False, True) if spatial or name != "instancenorm"]


@pytest.mark.parametrize(("name", "spatial"), SHAPES)
def test_shipped_norms_are_classified_as_before(name, spatial):
    factory = shipped("norm", name)
    if name == "groupnorm":
        factory.keywords["groups"] = 2
    module = factory(4, spatial)
    keeps, removes = NORMS[name]
    assert traits.keeps_running_stats(module) is keeps
    assert traits.removes_channel_mean(module) is removes
    assert not traits.is_activation(module)


def test_norms_without_running_statistics_keep_none():
    assert not traits.keeps_running_stats(nn.BatchNorm1d(3, track_running_stats=False))
    assert traits.removes_channel_mean(nn.BatchNorm1d(3, track_running_stats=False))
    assert traits.keeps_running_stats(nn.InstanceNorm2d(3, track_running_stats=True))


# --- a user's BN-like norm ------------------------------------------------------------------------


class DeclaredBatchNorm(nn.Module):
    """A user's BatchNorm, not derived from torch's: it declares that it keeps running statistics."""

    keeps_running_stats = True

    def __init__(self, num_features: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = x.mean(0), x.var(0, correction=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(x.var(0), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / (var + 1e-5).sqrt()


class DerivedBatchNorm(_BatchNorm):
    """A user's BatchNorm derived from torch's base class (not BatchNorm1d)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        pass


class Net(nn.Module):
    """Two stages (`blocks`) and a head, as trainlab.layers.stages splits any network."""

    def __init__(self, norm: type[nn.Module]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Linear(5, 6), norm(6), nn.ReLU()),
            nn.Sequential(nn.Linear(6, 6), norm(6), nn.ReLU()),
        )
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))

    def transfer_split(self) -> Split:
        return blocks_and_head(self)


@pytest.mark.parametrize("norm", [DeclaredBatchNorm, DerivedBatchNorm])
def test_a_users_batchnorm_is_refreshed_by_precise_bn_and_frozen_by_the_policy(norm):
    net = Net(norm)
    first = net.blocks[0][1]
    assert traits.keeps_running_stats(first) and traits.removes_channel_mean(first)
    # PreciseBN: the running statistics become those of the inputs over the batches
    batches = [torch.randn(16, 5) * 3 + 1 for _ in range(4)]
    inputs = torch.cat([net.blocks[0][0](b) for b in batches]).detach()
    assert recompute_bn_stats(net, batches) == 4
    assert_close(first.running_mean, inputs.mean(0), rtol=1e-5, atol=1e-5)
    assert_close(first.running_var, inputs.var(0), rtol=1e-4, atol=1e-5)
    # transfer: a frozen stage holds it in eval mode (its statistics fixed), a trained one does not
    policy = TransferPolicy(name="partial", freeze_depth=1)
    policy.freeze_before_training(SimpleNamespace(net=net))
    assert policy.split.stages[0].norm_layers(net) == [first]
    assert not first.training and net.blocks[1][1].training


def test_a_norm_may_declare_it_keeps_no_running_statistics():
    class Buffers(DeclaredBatchNorm):
        keeps_running_stats = False  # e.g. statistics it only reports

    net = Net(Buffers)
    assert recompute_bn_stats(net, [torch.randn(4, 5)]) == 0
    policy = TransferPolicy(name="partial", freeze_depth=1)
    policy.freeze_before_training(SimpleNamespace(net=net))
    assert policy.split.stages[0].norm_layers(net) == []


# --- a user's activation ------------------------------------------------------------------------


class ScaledTanh(nn.Module):
    """A bounded unit in (-2, 2); it declares where it saturates."""

    saturation_bounds = (-2.0, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(x)


class ShiftedReLU(nn.Module):
    """A rectifier trainlab does not know; it declares itself one."""

    is_rectifier = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x - 1.0)


def measured(net: nn.Module, x: torch.Tensor) -> list[dict[str, float]]:
    callback = LayerStats(every_n_steps=1, plots=False)
    callback.on_fit_start(SimpleNamespace(loggers=[]), net)
    callback._start_sample(step=0)
    net(x).sum().backward()
    callback._remove_hooks()
    return [{k: v.item() for k, v in layer.values.items()} for layer in callback._take_sample().layers]


def test_a_users_declared_activations_get_their_layer_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), ScaledTanh(), nn.Linear(8, 8), ShiftedReLU())
    with torch.no_grad():
        net[0].weight.mul_(20)  # a wide pre-activation: many saturated units
        net[2].bias.fill_(-5.0)  # most units below 1: dead
        net[2].bias[0] = 100.0  # one alive
    x = torch.randn(32, 4)
    tanh_layer, relu_layer = measured(net, x)
    y = 2 * torch.tanh(net[0](x))
    expected = ((y > 1.99) | (y < -1.99)).float().mean().item()
    assert 0.2 < expected < 0.9
    assert tanh_layer["saturated"] == pytest.approx(expected)
    assert "dead" not in tanh_layer
    assert relu_layer["dead"] == pytest.approx(7 / 8)
    assert "saturated" not in relu_layer
    assert traits.is_activation(ScaledTanh()) and traits.init_nonlinearity(ScaledTanh()) is None


def test_maxout_keeps_its_declared_gain():
    from trainlab.activations import Maxout

    assert traits.init_nonlinearity(Maxout(2)) == ("linear", None)
