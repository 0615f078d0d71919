"""StackedNetwork runs K of trainlab's networks as one: each member's outputs, gradients and
BatchNorm running statistics equal those of the member run alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from trainlab.models.factory import build_network
from trainlab.vectorised.stacked import NotVectorisable, StackedNetwork

CONF = Path(__file__).resolve().parents[1] / "conf"
MLP = {"_target_": "trainlab.models.mlp.MLP", "depth": 2, "width": 8}
CNN = {"_target_": "trainlab.models.cnn.CNN", "depth": 2, "width": 4, "convs_per_block": 1}
RESNET = {"_target_": "trainlab.models.resnet.ResNet", "depth": 2, "width": 4, "stages": 2}
SHAPES = {"mlp": (1, 4, 4), "cnn": (1, 8, 8), "resnet": (1, 8, 8)}
MODELS = {"mlp": MLP, "cnn": CNN, "resnet": RESNET}
# small enough for these nets: groups divide 4 channels, ghost batches of 4 divide a batch of 8
NORM_OPTIONS = {"groupnorm": {"groups": 2}, "ghost_batchnorm": {"virtual_batch_size": 4}}


def config(group: str, name: str) -> dict:
    options = yaml.safe_load((CONF / group / f"{name}.yaml").read_text())
    return {**options, **(NORM_OPTIONS.get(name, {}) if group == "norm" else {})}


def networks(model: str, norm: str, activation: str, count: int, **options) -> list[nn.Module]:
    members = []
    for seed in range(count):
        torch.manual_seed(seed)
        members.append(
            build_network(
                {**MODELS[model], **options},
                config("norm", norm),
                config("activation", activation),
                SHAPES[model],
                5,
            )
        )
    return members


# every norm and every activation at least once, over the three models
CASES = [
    ("mlp", "batchnorm", "relu"),
    ("mlp", "batchnorm_scratch", "tanh"),
    ("mlp", "ghost_batchnorm", "maxout"),
    ("mlp", "layernorm", "sigmoid"),
    ("mlp", "none", "leaky_relu"),
    ("cnn", "batchnorm", "gelu"),
    ("cnn", "batchnorm_scratch", "elu"),
    ("cnn", "instancenorm", "silu"),
    ("cnn", "groupnorm", "maxout"),
    ("resnet", "batchnorm", "relu"),
    ("resnet", "ghost_batchnorm", "silu"),
    ("resnet", "layernorm", "maxout"),
    ("resnet", "none", "tanh"),
]


def run_alone_and_stacked(
    members: list[nn.Module], steps: int = 2, exact: bool | None = None
) -> tuple[StackedNetwork, list[nn.Module], float, float]:
    """`steps` training forward/backward passes of each member alone and of all stacked (each
    member its own batch); the largest output and gradient differences."""
    alone = [copy.deepcopy(m) for m in members]
    stacked = StackedNetwork(members, exact=exact)
    generator = torch.Generator().manual_seed(0)
    shape = _input_shape(members[0])
    out_diff = grad_diff = 0.0
    for _ in range(steps):
        x = torch.randn(len(members), 8, *shape, generator=generator)
        stacked.zero_grad()
        out = stacked(x)
        out.square().mean(dim=(1, 2)).sum().backward()
        for k, net in enumerate(alone):
            net.zero_grad()
            own = net(x[k])
            own.square().mean().backward()
            out_diff = max(out_diff, (out[k] - own).abs().max().item())
            for name, p in net.named_parameters():
                if p.grad is not None:
                    grad_diff = max(
                        grad_diff, (stacked.stacked_parameters()[name].grad[k] - p.grad).abs().max().item()
                    )
    return stacked, alone, out_diff, grad_diff


def _input_shape(net: nn.Module) -> tuple[int, int, int]:
    return SHAPES["mlp"] if isinstance(net.blocks[0][0], nn.Linear) else SHAPES["cnn"]


def state_difference(stacked: StackedNetwork, alone: list[nn.Module]) -> float:
    return max(
        (stacked.member_state_dict(k)[name] - value).double().abs().max().item()
        for k, net in enumerate(alone)
        for name, value in net.state_dict().items()
    )


@pytest.mark.parametrize(("model", "norm", "activation"), CASES)
def test_members_equal_the_networks_run_alone(model: str, norm: str, activation: str) -> None:
    stacked, alone, out_diff, grad_diff = run_alone_and_stacked(networks(model, norm, activation, 3))
    assert out_diff < 1e-5
    assert grad_diff < 1e-5
    assert state_difference(stacked, alone) < 1e-6  # BatchNorm running statistics included
    # eval mode: every member on the same batch, with its running statistics
    stacked.eval()
    x = torch.randn(6, *_input_shape(alone[0]))
    expected = torch.stack([net.eval()(x) for net in alone])
    torch.testing.assert_close(stacked.forward_shared(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(stacked(x.expand(3, *x.shape)), expected, rtol=0, atol=1e-5)


# the layers with trainlab's per-member rules (Linear, Conv2d, torch's BatchNorm) and pure functions
EXACT_CASES = [
    ("mlp", "batchnorm", "relu"),
    ("mlp", "none", "leaky_relu"),
    ("cnn", "batchnorm", "gelu"),
    ("cnn", "none", "relu"),
    ("resnet", "batchnorm", "relu"),
]


@pytest.mark.parametrize(("model", "norm", "activation"), EXACT_CASES)
def test_exact_mode_is_bit_exact(model: str, norm: str, activation: str) -> None:
    # the CPU default: outputs, gradients and BatchNorm running statistics are the bits of each
    # member run alone (vmap's grouped convolution and batched batch norm are not)
    stacked, alone, out_diff, grad_diff = run_alone_and_stacked(
        networks(model, norm, activation, 3), exact=True
    )
    assert out_diff == 0 and grad_diff == 0
    assert state_difference(stacked, alone) == 0
    stacked.eval()
    x = torch.randn(6, *_input_shape(alone[0]))
    assert torch.equal(stacked.forward_shared(x), torch.stack([net.eval()(x) for net in alone]))


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(("model", "norm"), [("mlp", "none"), ("mlp", "batchnorm"), ("cnn", "batchnorm")])
def test_members_under_autocast_compute_as_their_networks_do(model: str, norm: str, exact: bool) -> None:
    # mixed precision: the members' layers are autocast as a network's are (a bf16 input into
    # BatchNorm's float32 statistics, which vmap's own batch-norm rule refuses)
    alone = networks(model, norm, "relu", 3)
    stacked = StackedNetwork(copy.deepcopy(alone), exact=exact)
    x = torch.randn(3, 6, *_input_shape(alone[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stacked(x)
        expected = torch.stack([net(x[k]) for k, net in enumerate(alone)])
    assert out.dtype == expected.dtype == torch.bfloat16
    if exact:
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, rtol=0, atol=0.05)  # bf16: ~1e-2 apart
    # the backward as autograd's around an autocast network: gradients in the parameters' dtype,
    # in exact mode each member's own bits (fast mode's bf16 roundings differ, and BatchNorm's
    # weight gradient, a sum with cancellations, turns them into differences of tens of percent)
    out.float().square().sum().backward()
    expected.float().square().sum().backward()
    for name, stacked_parameter in stacked.stacked_parameters().items():
        assert stacked_parameter.grad.dtype == torch.float32
        assert bool(stacked_parameter.grad.isfinite().all())
        own = torch.stack([dict(net.named_parameters())[name].grad for net in alone])
        assert torch.equal(stacked_parameter.grad, own) or not exact, name


@pytest.mark.parametrize(("model", "norm", "activation"), EXACT_CASES)
def test_fast_mode_agrees_to_a_rounding(model: str, norm: str, activation: str) -> None:
    stacked, alone, out_diff, grad_diff = run_alone_and_stacked(
        networks(model, norm, activation, 3), exact=False
    )
    assert out_diff < 1e-5 and grad_diff < 1e-5
    assert state_difference(stacked, alone) < 1e-6


def test_exact_mode_is_the_cpu_default() -> None:
    stacked, alone, out_diff, grad_diff = run_alone_and_stacked(networks("cnn", "batchnorm", "relu", 2))
    assert stacked.exact is None
    assert out_diff == 0 and grad_diff == 0 and state_difference(stacked, alone) == 0


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize(("model", "norm"), [("mlp", "batchnorm"), ("cnn", "batchnorm_scratch")])
def test_any_number_of_members(model: str, norm: str, count: int) -> None:
    stacked, alone, out_diff, grad_diff = run_alone_and_stacked(networks(model, norm, "relu", count))
    assert stacked.num_members == count
    assert out_diff < 1e-5 and grad_diff < 1e-5
    assert state_difference(stacked, alone) < 1e-6


@pytest.mark.parametrize("norm", ["batchnorm", "batchnorm_scratch", "ghost_batchnorm"])
def test_batchnorm_running_statistics_live_in_the_stacked_buffers(norm: str) -> None:
    stacked = StackedNetwork(networks("mlp", norm, "relu", 3))
    buffers = dict(stacked.network.named_buffers())
    mean = buffers["blocks.0.1.running_mean"]
    assert mean.shape[0] == 3 and not mean.any()
    stacked(torch.randn(3, 8, *SHAPES["mlp"]) + torch.arange(3.0).view(3, 1, 1, 1, 1))
    assert all(mean[k].abs().sum() > 0 for k in range(3))
    assert not torch.allclose(mean[0], mean[2])  # each member its own statistics
    assert buffers["blocks.0.1.num_batches_tracked"].tolist() == [2 if norm == "ghost_batchnorm" else 1] * 3
    stacked.eval()
    before = mean.clone()
    stacked(torch.randn(3, 8, *SHAPES["mlp"]))
    assert torch.equal(mean, before)  # eval mode leaves them alone


def test_parameters_are_stacked_leaves_that_follow_the_module() -> None:
    members = networks("cnn", "batchnorm", "relu", 3)
    stacked = StackedNetwork(members)
    parameters = stacked.stacked_parameters()
    assert list(parameters) == [name for name, _ in members[0].named_parameters()]
    for name, p in members[0].named_parameters():
        assert isinstance(parameters[name], nn.Parameter) and parameters[name].is_leaf
        assert parameters[name].shape == (3, *p.shape)
    assert set(dict(stacked.named_parameters()).values()) == set(parameters.values())
    stacked.eval()
    assert not any(m.training for m in stacked.modules())
    stacked.train()
    assert all(m.training for m in stacked.modules())
    stacked.to(torch.float64)  # moving the module moves what the forward pass uses
    assert stacked(torch.randn(3, 2, *SHAPES["cnn"], dtype=torch.float64)).dtype == torch.float64


def test_member_state_dict_round_trip() -> None:
    members = networks("resnet", "batchnorm", "relu", 3)
    stacked = StackedNetwork(members)
    for k, net in enumerate(members):
        state = stacked.member_state_dict(k)
        assert list(state) == list(net.state_dict())
        for name, value in net.state_dict().items():
            assert torch.equal(state[name], value)
    replacement = networks("resnet", "batchnorm", "relu", 5)[4].state_dict()
    stacked.load_member_state_dict(1, replacement)
    for name, value in replacement.items():
        assert torch.equal(stacked.member_state_dict(1)[name], value)
        assert torch.equal(stacked.member_state_dict(0)[name], members[0].state_dict()[name])
    fresh = networks("resnet", "batchnorm", "relu", 1)[0]
    fresh.load_state_dict(stacked.member_state_dict(2))  # an ordinary network takes it
    with pytest.raises(KeyError, match="missing keys"):
        stacked.load_member_state_dict(0, {"head.weight": replacement["head.weight"]})


@pytest.mark.parametrize(("dropout", "rate"), [(nn.Dropout, 0.3), (nn.Dropout2d, 0.5)])
def test_dropout_masks_are_independent_per_member_with_the_right_rate(dropout: type, rate: float) -> None:
    """Dropout cannot equal K sequential runs bit for bit: under vmap one generator draws one
    [K, ...] mask per call (randomness="different"), while each sequential run draws its own mask
    from its own generator state, and no seeding makes the first K slices of one draw equal K
    separate draws. What holds, and is tested: each member's mask has the configured rate, the
    members' masks are independent, and eval mode drops nothing."""
    torch.manual_seed(0)
    members = [nn.Sequential(dropout(rate)) for _ in range(8)]
    stacked = StackedNetwork(members)
    x = torch.ones(8, 64, 32, 4, 4)  # 64 examples of 32 channels per member
    out = stacked(x)
    kept = out != 0
    units = kept[..., 0, 0] if dropout is nn.Dropout2d else kept  # Dropout2d drops whole channels
    if dropout is nn.Dropout2d:
        assert torch.equal(kept, units[..., None, None].expand_as(kept))
    for k in range(8):
        assert abs(1 - units[k].float().mean().item() - rate) < 0.05
        assert torch.allclose(out[k][kept[k]], torch.full((), 1 / (1 - rate)))
    # independence: two members agree where both keep or both drop, p^2 + (1 - p)^2 of the time
    agreement = (units[0] == units[1]).float().mean().item()
    assert abs(agreement - (rate**2 + (1 - rate) ** 2)) < 0.05
    assert not torch.equal(units[0], units[1])
    stacked.eval()
    assert torch.equal(stacked(x), x)


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet"])
def test_trainlab_networks_with_dropout_run_stacked(model: str) -> None:
    members = networks(model, "layernorm", "relu", 3, dropout=0.5)
    stacked = StackedNetwork(members)
    out = stacked(torch.randn(3, 8, *SHAPES[model]))
    out.sum().backward()
    assert out.shape == (3, 8, 5)
    stacked.eval()
    x = torch.randn(4, *SHAPES[model])
    torch.testing.assert_close(stacked.forward_shared(x), torch.stack([m.eval()(x) for m in members]))


class _TimmLayer(nn.Linear):
    pass


_TimmLayer.__module__ = "timm.layers.linear"


def test_networks_that_cannot_be_stacked_are_refused_with_the_reason() -> None:
    with pytest.raises(NotVectorisable, match="timm"):
        StackedNetwork([nn.Sequential(_TimmLayer(2, 2)) for _ in range(2)])
    with pytest.raises(NotVectorisable, match=r"dropout|\.p is"):
        StackedNetwork([nn.Sequential(nn.Dropout(p)) for p in (0.1, 0.2)])
    with pytest.raises(NotVectorisable, match="shape"):
        StackedNetwork([nn.Sequential(nn.Linear(2, n)) for n in (3, 4)])
    hooked = nn.Sequential(nn.Linear(2, 2))
    hooked[0].register_forward_hook(lambda *args: None)
    with pytest.raises(NotVectorisable, match="hooks"):
        StackedNetwork([hooked])
    tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[1].weight = tied[0].weight
    with pytest.raises(NotVectorisable, match="ties"):
        StackedNetwork([tied])
    cumulative = nn.Sequential(nn.BatchNorm1d(2, momentum=None))
    with pytest.raises(NotVectorisable, match="momentum=None"):
        StackedNetwork([cumulative])
    with pytest.raises(ValueError, match=r"\[K=2, B"):
        StackedNetwork(networks("mlp", "none", "relu", 2))(torch.randn(3, 4, *SHAPES["mlp"]))
