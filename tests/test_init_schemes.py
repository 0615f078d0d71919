"""Init schemes match their papers' formulas: variances, bounds, fans, gains, biases, symmetry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainlab.init import core, schemes
from trainlab.models.mlp import MLP
from trainlab.norm import batchnorm, none
from trainlab.utils.config import ConfigError

# (fan_in, fan_out) of large layers: sample variances within ~1% of the true ones.
LINEARS = [(64, 4096), (256, 1024), (1024, 512)]
CONVS = [(4, 1024, 3), (32, 256, 3), (128, 128, 5)]  # (in_channels, out_channels, kernel)


def layer_cases() -> list[nn.Module]:
    return [nn.Linear(i, o) for i, o in LINEARS] + [nn.Conv2d(i, o, k) for i, o, k in CONVS]


def with_relu(layer: nn.Module) -> nn.Module:
    return nn.Sequential(layer, nn.ReLU())


def fans(layer: nn.Module) -> tuple[int, int]:
    return core.fan_in_and_fan_out(layer.weight)


CASE_IDS = [f"linear{i}x{o}" for i, o in LINEARS] + [f"conv{i}x{o}k{k}" for i, o, k in CONVS]


@pytest.mark.parametrize("layer", layer_cases(), ids=CASE_IDS)
@pytest.mark.parametrize(
    ("scheme", "variance", "bound"),
    [
        # He et al. 2015: Var = 2 / fan_in for ReLU; uniform bound sqrt(6 / fan_in) (not 4/(fan_in+fan_out))
        (lambda n: schemes.kaiming_normal(n), lambda fi, fo: 2 / fi, None),
        (lambda n: schemes.kaiming_uniform(n), lambda fi, fo: 2 / fi, lambda fi, fo: math.sqrt(6 / fi)),
        (lambda n: schemes.kaiming_normal(n, mode="fan_out"), lambda fi, fo: 2 / fo, None),
        (
            lambda n: schemes.kaiming_uniform(n, mode="fan_out"),
            lambda fi, fo: 2 / fo,
            lambda fi, fo: math.sqrt(6 / fo),
        ),
        # Glorot & Bengio 2010: Var = 2 / (fan_in + fan_out), bound sqrt(6 / (fan_in + fan_out))
        (lambda n: schemes.xavier_normal(n), lambda fi, fo: 2 / (fi + fo), None),
        (
            lambda n: schemes.xavier_uniform(n),
            lambda fi, fo: 2 / (fi + fo),
            lambda fi, fo: math.sqrt(6 / (fi + fo)),
        ),
        # LeCun et al. 1998: Var = 1 / fan_in
        (lambda n: schemes.lecun_normal(n), lambda fi, fo: 1 / fi, None),
        (lambda n: schemes.normal(n, std=0.05), lambda fi, fo: 0.05**2, None),
        (lambda n: schemes.uniform(n, a=0.1), lambda fi, fo: 0.1**2 / 3, lambda fi, fo: 0.1),
        (
            lambda n: schemes.variance_scaling(n, scale=2.0, distribution="truncated_normal"),
            lambda fi, fo: 2 / fi,
            lambda fi, fo: 2 * math.sqrt(2 / fi) / 0.87962566103423978,
        ),
    ],
    ids=[
        "kaiming_normal",
        "kaiming_uniform",
        "kaiming_normal_fan_out",
        "kaiming_uniform_fan_out",
        "xavier_normal",
        "xavier_uniform",
        "lecun_normal",
        "normal",
        "uniform",
        "truncated_normal",
    ],
)
def test_variance_and_bounds_match_the_formula(layer, scheme, variance, bound):
    torch.manual_seed(0)
    scheme(with_relu(layer))
    weight = layer.weight.detach()
    fan_in, fan_out = fans(layer)
    expected = variance(fan_in, fan_out)
    assert weight.mean().abs() < 0.02 * math.sqrt(expected)
    assert weight.var().item() == pytest.approx(expected, rel=0.03)
    if bound is not None:
        b = bound(fan_in, fan_out)
        assert weight.abs().max().item() <= b * (1 + 1e-6)
        assert (
            weight.abs().max().item() >= 0.98 * b
        )  # the bound is reached: it is the bound, not a smaller one


@pytest.mark.parametrize("layer", layer_cases(), ids=CASE_IDS)
@pytest.mark.parametrize(
    ("ours", "torchs"),
    [
        (lambda n: schemes.kaiming_uniform(n), lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu")),
        (lambda n: schemes.kaiming_normal(n), lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")),
        (
            lambda n: schemes.kaiming_normal(n, mode="fan_out"),
            lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
        ),
        (lambda n: schemes.xavier_uniform(n), nn.init.xavier_uniform_),
        (lambda n: schemes.xavier_normal(n), nn.init.xavier_normal_),
        (lambda n: schemes.orthogonal(n), lambda w: nn.init.orthogonal_(w, gain=math.sqrt(2))),
    ],
    ids=[
        "kaiming_uniform",
        "kaiming_normal",
        "kaiming_normal_fan_out",
        "xavier_uniform",
        "xavier_normal",
        "orthogonal",
    ],
)
def test_same_numbers_as_torch_nn_init(layer, ours, torchs):
    reference = layer.weight.detach().clone()
    torch.manual_seed(1)
    torchs(reference)
    torch.manual_seed(1)
    ours(with_relu(layer))
    torch.testing.assert_close(layer.weight.detach(), reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "weight_shape",
    [(10, 7), (64, 3, 3, 3), (16, 4, 5, 5), (8, 2, 3), (4, 2, 3, 3, 3), (32, 8, 3, 3)],
)
def test_fans_of_linear_and_conv_layers(weight_shape):
    weight = torch.empty(weight_shape)
    assert core.fan_in_and_fan_out(weight) == nn.init._calculate_fan_in_and_fan_out(weight)
    receptive = math.prod(weight_shape[2:])
    assert core.fan_in_and_fan_out(weight) == (weight_shape[1] * receptive, weight_shape[0] * receptive)


def test_grouped_conv_fan_in_counts_the_inputs_of_one_group():
    conv = nn.Conv2d(32, 64, 3, groups=4)
    assert core.fan_in_and_fan_out(conv.weight) == (8 * 9, 64 * 9)


@pytest.mark.parametrize("shape", [(256, 512), (512, 256), (64, 32, 3, 3)])
def test_orthogonal_rows_or_columns_are_orthonormal_times_the_gain(shape):
    layer = nn.Linear(shape[1], shape[0]) if len(shape) == 2 else nn.Conv2d(shape[1], shape[0], shape[2])
    schemes.orthogonal(with_relu(layer))
    flat = layer.weight.detach().flatten(1)
    small = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    torch.testing.assert_close(small, 2.0 * torch.eye(len(small)), atol=1e-4, rtol=0)  # gain**2 = 2 for ReLU
    schemes.orthogonal(with_relu(layer), nonlinearity="linear")  # Saxe et al.'s gain 1
    flat = layer.weight.detach().flatten(1)
    small = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    torch.testing.assert_close(small, torch.eye(len(small)), atol=1e-4, rtol=0)


def test_constant_zeros_and_default():
    net = with_relu(nn.Linear(30, 20))
    schemes.constant(net, value=0.3, bias=-0.2)
    assert torch.all(net[0].weight == 0.3) and torch.all(net[0].bias == -0.2)
    schemes.zeros(net)
    assert torch.all(net[0].weight == 0) and torch.all(net[0].bias == 0)
    torch.manual_seed(0)
    fresh = with_relu(nn.Linear(30, 20))
    before = [p.detach().clone() for p in fresh.parameters()]
    schemes.framework_default(fresh)  # PyTorch's own init, weights and biases kept
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters(), strict=True))
    bound = 1 / math.sqrt(30)  # PyTorch's Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert fresh[0].weight.abs().max() <= bound and fresh[0].bias.abs().max() <= bound
    schemes.framework_default(fresh, bias=0.5)
    assert torch.equal(fresh[0].weight, before[0]) and torch.all(fresh[0].bias == 0.5)


ALL_SIMPLE = {
    "zeros": schemes.zeros,
    "constant": schemes.constant,
    "normal": schemes.normal,
    "uniform": schemes.uniform,
    "xavier_uniform": schemes.xavier_uniform,
    "xavier_normal": schemes.xavier_normal,
    "kaiming_uniform": schemes.kaiming_uniform,
    "kaiming_normal": schemes.kaiming_normal,
    "lecun_normal": schemes.lecun_normal,
    "orthogonal": schemes.orthogonal,
    "variance_scaling": schemes.variance_scaling,
}


def mlp_with_batchnorm() -> MLP:
    return MLP((1, 8, 8), 10, batchnorm, nn.ReLU, depth=2, width=32, position="post_act")


@pytest.mark.parametrize("name", sorted(ALL_SIMPLE))
def test_every_weight_layer_is_initialised_norm_layers_are_left_alone(name):
    net = mlp_with_batchnorm()
    with torch.no_grad():
        for _, layer in core.weight_layers(net):
            layer.weight.fill_(float("nan"))
            layer.bias.fill_(float("nan"))
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
        for norm in norms:  # gamma/beta set apart from 1/0: a scheme must not touch them
            norm.weight.fill_(1.5)
            norm.bias.fill_(-0.5)
    ALL_SIMPLE[name](net, bias=0.1)
    layers = core.weight_layers(net)
    assert [n for n, _ in layers] == ["blocks.0.0", "blocks.1.0", "head"]
    for _, layer in layers:
        assert torch.isfinite(layer.weight).all()
        assert torch.all(layer.bias == 0.1)
    assert len(norms) == 2
    for norm in norms:
        assert torch.all(norm.weight == 1.5) and torch.all(norm.bias == -0.5)


def train_a_few_steps(net: nn.Module, steps: int = 5) -> None:
    torch.manual_seed(0)
    inputs, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()


def test_constant_init_keeps_units_identical_after_training_steps():
    net = MLP((1, 8, 8), 10, none, nn.ReLU, depth=2, width=16)
    schemes.constant(net, value=0.05, bias=0.01)
    train_a_few_steps(net)
    for name, layer in core.weight_layers(net)[:-1]:  # hidden layers: every unit (row) the same
        weight = layer.weight.detach()
        assert not torch.allclose(weight, torch.full_like(weight, 0.05)), f"{name} did not learn"
        torch.testing.assert_close(weight, weight[:1].expand_as(weight))
        torch.testing.assert_close(layer.bias.detach(), layer.bias[:1].detach().expand_as(layer.bias))
    head = net.head.weight.detach()  # the head sees identical hidden units: identical columns
    torch.testing.assert_close(head, head[:, :1].expand_as(head))


def test_zero_init_only_trains_the_output_bias():
    net = MLP((1, 8, 8), 10, none, nn.ReLU, depth=2, width=16)
    schemes.zeros(net)
    train_a_few_steps(net)
    for _, layer in core.weight_layers(net):
        assert torch.all(layer.weight == 0)
    assert net.head.bias.abs().sum() > 0
    assert all(torch.all(layer.bias == 0) for _, layer in core.weight_layers(net)[:-1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda n: schemes.normal(n, std=-1.0), r"init.std=-1.0 must be > 0"),
        (lambda n: schemes.normal(n, std=0.0), r"init.std=0.0 must be > 0 \(std=0 is init=zeros\)"),
        (lambda n: schemes.uniform(n, a=-0.1), r"init.a=-0.1 must be > 0"),
        (
            lambda n: schemes.kaiming_normal(n, mode="fan_avg"),
            r"init.mode='fan_avg' is not one of \['fan_in', 'fan_out'\]",
        ),
        (
            lambda n: schemes.kaiming_uniform(n, nonlinearity="swish"),
            r"init.nonlinearity='swish' is not one of \['auto', 'linear', 'sigmoid', 'tanh', 'relu'",
        ),
        (
            lambda n: schemes.variance_scaling(n, distribution="cauchy"),
            r"init.distribution='cauchy' is not one of \['normal', 'uniform', 'truncated_normal'\]",
        ),
        (lambda n: schemes.kaiming_normal(nn.Sequential(nn.ReLU())), r"has no Linear or Conv layer"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call(with_relu(nn.Linear(4, 4)))
