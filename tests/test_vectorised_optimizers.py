"""The stacked optimizers update member k as its own torch optimizer (and schedule) would: per-member
lr and weight decay under trainlab's schedules, frozen members, member state in torch's format."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from trainlab.models.factory import build_network
from trainlab.optim.schedulers import cosine, step
from trainlab.vectorised.optimizers import (
    StackedAdam,
    StackedSGD,
    load_member_optimizer_state,
    member_optimizer_state,
    stacked_optimizer,
)
from trainlab.vectorised.stacked import StackedNetwork

MLP = {"_target_": "trainlab.models.mlp.MLP", "depth": 1, "width": 8}
NORM = {"_target_": "trainlab.norm.batchnorm", "_partial_": True}
RELU = {"_target_": "torch.nn.ReLU", "_partial_": True}
SHAPE = (1, 4, 4)
TOTAL_STEPS = 6

# (class, options shared by the members, per-member options)
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9}, {"lr": [0.05, 0.1, 0.02], "weight_decay": [0.0, 1e-2, 1e-3]}),
    "sgd_nesterov": (
        torch.optim.SGD,
        {"momentum": 0.8, "nesterov": True},
        {"lr": [0.05, 0.1, 0.02], "weight_decay": [1e-3, 0.0, 1e-1]},
    ),
    "sgd_dampening": (
        torch.optim.SGD,
        {"momentum": 0.9, "dampening": 0.3, "maximize": True},
        {"lr": [0.01, 0.02, 0.03], "weight_decay": [0.0, 0.0, 0.0]},
    ),
    "sgd_plain": (torch.optim.SGD, {}, {"lr": [0.05, 0.1, 0.02], "weight_decay": [0.0, 1e-2, 1e-3]}),
    "adam": (torch.optim.Adam, {}, {"lr": [3e-3, 1e-2, 1e-3], "weight_decay": [0.0, 1e-2, 1e-1]}),
    "adam_amsgrad": (
        torch.optim.Adam,
        {"amsgrad": True, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": [3e-3, 1e-2, 1e-3], "weight_decay": [0.0, 0.0, 0.0]},
    ),
    "adamw": (torch.optim.AdamW, {}, {"lr": [3e-3, 1e-2, 1e-3], "weight_decay": [1e-2, 0.0, 0.5]}),
    # a study over seeds: every member has the same rates, which exact mode applies in one kernel
    "sgd_same_rates": (torch.optim.SGD, {"momentum": 0.9}, {"lr": [0.05] * 3, "weight_decay": [1e-3] * 3}),
    "adam_same_rates": (torch.optim.Adam, {}, {"lr": [3e-3] * 3, "weight_decay": [1e-2] * 3}),
    "adamw_same_rates": (torch.optim.AdamW, {}, {"lr": [3e-3] * 3, "weight_decay": [1e-2] * 3}),
}


def members(count: int = 3) -> list[nn.Module]:
    networks = []
    for seed in range(count):
        torch.manual_seed(seed)
        networks.append(build_network(MLP, NORM, RELU, SHAPE, 5))
    return networks


def member_optimizers(kind: str, networks: list[nn.Module]) -> list[torch.optim.Optimizer]:
    cls, shared, per_member = OPTIMIZERS[kind]
    return [
        cls(net.parameters(), **shared, **{key: values[k] for key, values in per_member.items()})
        for k, net in enumerate(networks)
    ]


def batches(count: int, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(count, 6, *SHAPE, generator=generator),
            torch.randint(0, 5, (count, 6), generator=generator),
        )
        for _ in range(steps)
    ]


class Setup:
    """K reference networks with their own torch optimizers and schedules, and the same K as one
    stacked network with the stacked optimizer and one schedule."""

    def __init__(self, kind: str, schedule=cosine, count: int = 3, exact: bool | None = None) -> None:
        networks = members(count)
        self.reference = [copy.deepcopy(net) for net in networks]
        self.reference_optimizers = member_optimizers(kind, self.reference)
        self.reference_schedules = [schedule(o, total_steps=TOTAL_STEPS) for o in self.reference_optimizers]
        self.stacked = StackedNetwork(networks, exact=exact)
        self.optimizer = stacked_optimizer(
            member_optimizers(kind, networks), networks, self.stacked, exact=exact
        )
        self.schedule = schedule(self.optimizer, total_steps=TOTAL_STEPS)

    def step(self, x: torch.Tensor, y: torch.Tensor, skip: frozenset[int] = frozenset()) -> None:
        for k, (net, optimizer, schedule) in enumerate(
            zip(self.reference, self.reference_optimizers, self.reference_schedules, strict=True)
        ):
            if k in skip:
                continue
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[k]), y[k]).backward()
            optimizer.step()
            schedule.step()
        self.optimizer.zero_grad()
        logits = self.stacked(x)
        losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        losses.view(len(x), -1).mean(1).sum().backward()  # member k's gradient is its own loss's
        self.optimizer.step()
        self.schedule.step()

    def bit_equal(self) -> bool:
        return all(
            torch.equal(self.stacked.member_state_dict(k)[name], value)
            for k, net in enumerate(self.reference)
            for name, value in net.state_dict().items()
        )

    def max_difference(self, skip: frozenset[int] = frozenset()) -> float:
        return max(
            (self.stacked.member_state_dict(k)[name] - value).abs().max().item()
            for k, net in enumerate(self.reference)
            if k not in skip
            for name, value in net.state_dict().items()
        )


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_steps_under_a_cosine_schedule_equal_separate_torch_optimizers(kind: str) -> None:
    setup = Setup(kind)
    for x, y in batches(3, TOTAL_STEPS):
        setup.step(x, y)
    assert setup.max_difference() < 1e-6
    # the schedule scaled each member's own rate: member k's lr is its own schedule's
    for k, optimizer in enumerate(setup.reference_optimizers):
        assert setup.optimizer.param_groups[0]["lr"][k].item() == optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_exact_mode_is_bit_exact_against_torch_step_by_step(kind: str) -> None:
    # exact (the CPU default): each member's weights, BatchNorm statistics included, are torch's own
    # bits after every step, per-member lr and weight decay under the cosine schedule
    setup = Setup(kind, exact=True)
    for x, y in batches(3, TOTAL_STEPS):
        setup.step(x, y)
        assert setup.bit_equal()


@pytest.mark.parametrize("kind", ["sgd_nesterov", "adam", "adam_amsgrad", "adamw"])
def test_fast_mode_agrees_to_a_rounding(kind: str) -> None:
    setup = Setup(kind, exact=False)
    assert setup.optimizer.exact is False and setup.stacked.exact is False
    for x, y in batches(3, TOTAL_STEPS):
        setup.step(x, y)
    assert setup.max_difference() < 1e-6


def _tiny_gradients(networks: list[nn.Module], generator: torch.Generator) -> None:
    """Random gradients; those of each parameter's first row ~1e-9, the rounding noise Adam
    normalises into full-size steps (a weight whose true gradient is 0)."""
    for net in networks:
        for p in net.parameters():
            p.grad = torch.randn(p.shape, generator=generator) * 1e-3
            p.grad[0] *= 1e-6


@pytest.mark.parametrize("kind", ["sgd_nesterov", "adam", "adam_amsgrad", "adamw"])
@pytest.mark.parametrize("exact", [True, False])
def test_the_update_alone_against_torch_on_noise_sized_gradients(kind: str, exact: bool) -> None:
    # the same gradients for both: only the optimizers' arithmetic differs
    networks = members()
    reference = [copy.deepcopy(net) for net in networks]
    reference_optimizers = member_optimizers(kind, reference)
    stacked = StackedNetwork(networks)
    optimizer = stacked_optimizer(member_optimizers(kind, networks), networks, stacked, exact=exact)
    parameters = stacked.stacked_parameters()
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        _tiny_gradients(reference, generator)
        for name, p in parameters.items():
            p.grad = torch.stack([dict(net.named_parameters())[name].grad for net in reference])
        optimizer.step()
        for own in reference_optimizers:
            own.step()
    for k, net in enumerate(reference):
        for name, p in net.named_parameters():
            if exact:
                assert torch.equal(parameters[name][k], p), name
            else:
                torch.testing.assert_close(parameters[name][k], p, rtol=0, atol=1e-6)


def test_exact_mode_with_members_at_different_steps() -> None:
    # member 1 set back 2 steps (weights and optimizer state, in both): its bias corrections differ
    setup = Setup("adam", exact=True)
    data = batches(3, TOTAL_STEPS)
    for x, y in data[:2]:
        setup.step(x, y)
    weights, state = (
        copy.deepcopy(setup.reference[1].state_dict()),
        member_optimizer_state(setup.optimizer, 1),
    )
    for x, y in data[2:4]:
        setup.step(x, y)
    setup.reference[1].load_state_dict(weights)
    setup.reference_optimizers[1].load_state_dict(copy.deepcopy(state))
    setup.stacked.load_member_state_dict(1, weights)
    load_member_optimizer_state(setup.optimizer, 1, state)
    setup.step(*data[4])
    assert setup.optimizer.state[next(iter(setup.stacked.parameters()))]["step"].tolist() == [5.0, 3.0, 5.0]
    assert setup.bit_equal()


def test_step_schedule_scales_each_member_rate() -> None:
    setup = Setup("sgd", schedule=step)
    for x, y in batches(3, TOTAL_STEPS):
        setup.step(x, y)
    assert setup.max_difference() < 1e-6
    lrs = setup.optimizer.param_groups[0]["lr"].tolist()
    assert lrs == pytest.approx([0.05 * 0.01, 0.1 * 0.01, 0.02 * 0.01])


def _assert_same_state(ours: dict, theirs: dict) -> None:
    assert ours["param_groups"] == theirs["param_groups"]  # structure, floats and all
    assert set(ours["state"]) == set(theirs["state"])
    for index, state in theirs["state"].items():
        assert list(ours["state"][index]) == list(state)
        for key, value in state.items():
            assert type(ours["state"][index][key]) is type(value)
            if isinstance(value, torch.Tensor):
                assert ours["state"][index][key].shape == value.shape
                assert ours["state"][index][key].dtype == value.dtype
                assert ours["state"][index][key].device == value.device
                torch.testing.assert_close(ours["state"][index][key], value, rtol=0, atol=1e-6)
            else:
                assert ours["state"][index][key] == value


@pytest.mark.parametrize("kind", ["sgd", "adam", "adam_amsgrad", "adamw"])
def test_member_optimizer_state_is_torch_state_dict_and_continues_in_a_torch_optimizer(kind: str) -> None:
    setup = Setup(kind)
    data = batches(3, TOTAL_STEPS)
    for x, y in data[:3]:
        setup.step(x, y)
    for k in range(3):
        _assert_same_state(
            member_optimizer_state(setup.optimizer, k), setup.reference_optimizers[k].state_dict()
        )
    # member 1 goes on as an ordinary network with an ordinary torch optimizer and schedule
    cls, shared, per_member = OPTIMIZERS[kind]
    net = build_network(MLP, NORM, RELU, SHAPE, 5)
    net.load_state_dict(setup.stacked.member_state_dict(1))
    optimizer = cls(net.parameters(), **shared, **{key: values[0] for key, values in per_member.items()})
    schedule = cosine(optimizer, total_steps=TOTAL_STEPS)
    optimizer.load_state_dict(member_optimizer_state(setup.optimizer, 1))
    schedule.load_state_dict(setup.reference_schedules[1].state_dict())
    for x, y in data[3:]:
        setup.step(x, y)
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x[1]), y[1]).backward()
        optimizer.step()
        schedule.step()
    reference = setup.reference[1].state_dict()
    assert (
        max((value - reference[name]).abs().max().item() for name, value in net.state_dict().items()) < 1e-6
    )


@pytest.mark.parametrize("kind", ["sgd_dampening", "adam"])
def test_load_member_optimizer_state_resets_one_member(kind: str) -> None:
    """Member 2 restarts from a fresh torch optimizer's state (no state yet) while the others keep
    theirs: its next step is a first step (SGD starts its buffer from the gradient)."""
    setup = Setup(kind, schedule=lambda o, total_steps: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0))
    data = batches(3, 5)
    for x, y in data[:2]:
        setup.step(x, y)
    fresh = member_optimizers(kind, setup.reference)[2]
    torch.optim.lr_scheduler.LambdaLR(fresh, lambda s: 1.0)  # sets initial_lr, as a resumed run's schedule
    setup.reference_optimizers[2].load_state_dict(fresh.state_dict())
    load_member_optimizer_state(setup.optimizer, 2, fresh.state_dict())
    for k in range(3):
        _assert_same_state(
            member_optimizer_state(setup.optimizer, k), setup.reference_optimizers[k].state_dict()
        )
    for x, y in data[2:]:
        setup.step(x, y)
    assert setup.max_difference() < 1e-6


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_a_frozen_member_stops_changing_even_with_nan_gradients(kind: str) -> None:
    setup = Setup(kind)
    data = batches(3, TOTAL_STEPS)
    for x, y in data[:2]:
        setup.step(x, y)
    setup.optimizer.freeze_member(1)
    before_params = setup.stacked.member_state_dict(1)
    before_state = member_optimizer_state(setup.optimizer, 1)
    for x, y in data[2:]:
        x = x.clone()
        x[1] = float("nan")  # member 1 diverged: NaN logits, NaN gradients
        setup.step(x, y, skip=frozenset({1}))
    after = setup.stacked.member_state_dict(1)
    for name, value in before_params.items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # the forward pass, not the optimizer, moves the BN statistics
        assert torch.equal(after[name], value), name
    state = member_optimizer_state(setup.optimizer, 1)
    for index, values in before_state["state"].items():
        for key, value in values.items():
            assert torch.equal(state["state"][index][key], value)
    assert setup.max_difference(skip=frozenset({1})) < 1e-6


def test_a_member_frozen_before_its_first_step_has_no_state() -> None:
    setup = Setup("adam")
    setup.optimizer.freeze_member(0)
    x, y = batches(3, 1)[0]
    setup.step(x, y, skip=frozenset({0}))
    assert member_optimizer_state(setup.optimizer, 0)["state"] == {}
    assert member_optimizer_state(setup.optimizer, 1)["state"] != {}


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_state_dict_round_trip(kind: str) -> None:
    setup = Setup(kind)
    data = batches(3, 4)
    for x, y in data[:2]:
        setup.step(x, y)
    buffer = io.BytesIO()
    torch.save({"optimizer": setup.optimizer.state_dict(), "schedule": setup.schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # no trainlab class needed to read it
    # a second stacked network and optimizer, built afresh and loaded from the checkpoint
    twin = copy.deepcopy(setup.stacked)
    cls = type(setup.optimizer)
    optimizer = cls(twin.parameters(), num_members=3, lr=1.0)
    schedule = cosine(optimizer, total_steps=TOTAL_STEPS)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    assert torch.equal(optimizer.param_groups[0]["lr"], setup.optimizer.param_groups[0]["lr"])
    for x, y in data[2:]:
        setup.step(x, y)
        optimizer.zero_grad()
        logits = twin(x)
        losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        losses.view(3, -1).mean(1).sum().backward()
        optimizer.step()
        schedule.step()
    for name, value in twin.state_dict().items():
        assert torch.equal(value, setup.stacked.state_dict()[name]), name


def test_members_must_share_class_and_settings() -> None:
    networks = members(2)
    stacked = StackedNetwork(networks)
    mixed = [torch.optim.SGD(networks[0].parameters(), lr=0.1), torch.optim.Adam(networks[1].parameters())]
    with pytest.raises(ValueError, match="Adam"):
        stacked_optimizer(mixed, networks, stacked)
    momenta = [
        torch.optim.SGD(n.parameters(), lr=0.1, momentum=m) for n, m in zip(networks, (0.9, 0.5), strict=True)
    ]
    with pytest.raises(ValueError, match="'momentum'"):
        stacked_optimizer(momenta, networks, stacked)
    other = [torch.optim.RMSprop(n.parameters()) for n in networks]
    with pytest.raises(ValueError, match="RMSprop"):
        stacked_optimizer(other, networks, stacked)


def test_stacked_optimizer_carries_over_member_state() -> None:
    """Members resumed with state: the stacked optimizer starts from each member's own."""
    networks = members(2)
    optimizers = member_optimizers("adam", networks)[:2]
    x, y = batches(2, 1)[0]
    for k, (net, optimizer) in enumerate(zip(networks, optimizers, strict=True)):
        nn.functional.cross_entropy(net(x[k]), y[k]).backward()
        optimizer.step()
    stacked = StackedNetwork(networks)
    optimizer = stacked_optimizer(optimizers, networks, stacked)
    for k in range(2):
        _assert_same_state(member_optimizer_state(optimizer, k), optimizers[k].state_dict())


def test_per_member_values_are_validated() -> None:
    p = nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one per member"):
        StackedSGD([p], num_members=3, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="lr must be >= 0"):
        StackedAdam([p], num_members=3, lr=[0.1, -0.2, 0.1])
    with pytest.raises(ValueError, match=r"stacked parameters \[K=4"):
        StackedSGD([p], num_members=4, lr=0.1)
    optimizer = StackedSGD([p], num_members=3, lr=[0.1, 0.2, 0.3])
    assert optimizer.param_groups[0]["lr"].tolist() == [0.1, 0.2, 0.3]
    assert math.isclose(member_optimizer_state(optimizer, 2)["param_groups"][0]["lr"], 0.3)
