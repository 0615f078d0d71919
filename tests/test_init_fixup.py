"""Fixup (Zhang et al. 2019): zero last branch layers and classifier, branches scaled by
L^(-1/(2m-2)), trainable scalar biases and multipliers; a clear error on a plain network."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainlab.init.core import fan_in_and_fan_out
from trainlab.init.fixup import fixup
from trainlab.models.mlp import MLP
from trainlab.models.resnet import ResidualBlock, ResNet
from trainlab.norm import batchnorm, none
from trainlab.utils.config import ConfigError

from conftest import full_batch_losses


def resnet(depth: int = 4, width: int = 32, stages: int = 2, norm=none, activation=nn.ReLU) -> ResNet:
    torch.manual_seed(0)
    return ResNet((3, 16, 16), 10, norm, activation, depth=depth, width=width, stages=stages)


def blocks_of(network: nn.Module) -> list[ResidualBlock]:
    return [m for m in network.modules() if isinstance(m, ResidualBlock)]


@pytest.mark.parametrize("mode", ["fan_out", "fan_in"])
@pytest.mark.parametrize("depth", [4, 9])
def test_fixup_zero_inits_last_branch_layers_and_scales_the_rest(mode, depth):
    network = resnet(depth=depth)
    fixup(network, mode=mode)
    blocks = blocks_of(network)
    assert len(blocks) == depth
    relu_gain = math.sqrt(2)
    for block in blocks:
        # rule 1: last layer of each branch is 0 (weights and bias)
        assert torch.all(block.conv2.weight == 0)
        assert block.conv2.bias is None or torch.all(block.conv2.bias == 0)
        # rule 2: the other branch layer is He-initialised and scaled by L^(-1/(2m-2)) = L^(-1/2), m = 2
        fan_in, fan_out = fan_in_and_fan_out(block.conv1.weight)
        fan = fan_in if mode == "fan_in" else fan_out
        expected = relu_gain / math.sqrt(fan) * depth ** (-1 / 2)
        assert block.conv1.weight.std().item() == pytest.approx(expected, rel=0.05)
        # rule 3: scalar multiplier 1 and scalar biases 0, now trainable
        assert block.fixup_scale.item() == 1.0 and block.fixup_scale.requires_grad
        assert all(b.item() == 0.0 and b.requires_grad for b in block.fixup_biases)
    # the classification layer is 0; the layers outside the branches keep plain He init
    assert torch.all(network.head.weight == 0) and torch.all(network.head.bias == 0)
    stem = network.blocks.stem[0].weight
    fan_in, fan_out = fan_in_and_fan_out(stem)
    assert stem.std().item() == pytest.approx(
        relu_gain / math.sqrt(fan_in if mode == "fan_in" else fan_out), rel=0.1
    )


def test_fixup_blocks_start_as_the_identity_and_the_output_at_zero():
    network = resnet(depth=4, stages=1)  # no downsampling: every shortcut is the identity
    fixup(network)
    x = torch.randn(8, 32, 16, 16)
    for block in blocks_of(network):
        torch.testing.assert_close(block(x), x)
    assert torch.all(network(torch.randn(8, 3, 16, 16)) == 0)


def test_fixup_network_trains_and_its_scalars_learn():
    network = resnet(depth=3, width=8, stages=2)
    fixup(network)
    inputs, labels = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.1)
    losses = full_batch_losses(network, inputs, labels, optimizer, steps=5)
    assert losses[0] == pytest.approx(math.log(10), rel=1e-5)  # zero logits at init
    assert losses[-1] < losses[0]
    assert any(b.item() != 0 for block in blocks_of(network) for b in block.fixup_biases)


class ThreeLayerBranch(nn.Module):
    """A residual block from outside trainlab with m = 3 branch layers: Fixup only needs the protocol."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(3))
        self.act = nn.ReLU()
        self.fixup_biases = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(2))
        self.fixup_scale = nn.Parameter(torch.ones(()))

    def branch_layers(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x):
        out = self.act(self.layers[0](x))
        return x + self.layers[2](self.act(self.layers[1](out))) * self.fixup_scale


def test_fixup_scaling_for_three_layer_branches_is_l_to_the_minus_quarter():
    torch.manual_seed(0)
    depth, width = 16, 512
    network = nn.Sequential(*(ThreeLayerBranch(width) for _ in range(depth)), nn.Linear(width, 10))
    fixup(network, mode="fan_in")
    factor = depth ** (-1 / (2 * 3 - 2))  # L^(-1/(2m-2)) = 16^(-1/4) = 1/2
    assert factor == 0.5
    for block in network[:-1]:
        for layer in block.layers[:2]:
            assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / width) * factor, rel=0.02)
            assert torch.all(layer.bias == 0)
        assert torch.all(block.layers[2].weight == 0) and torch.all(block.layers[2].bias == 0)
    assert torch.all(network[-1].weight == 0)


def test_fixup_on_a_network_without_residual_branches_is_a_clear_error():
    with pytest.raises(
        ConfigError,
        match=r"init=fixup needs a residual network; MLP has no residual branches\. Use model=resnet",
    ):
        fixup(MLP((1, 8, 8), 10, none, nn.ReLU))


def test_fixup_with_normalisation_warns(caplog):
    network = resnet(norm=batchnorm, depth=2, width=8)
    with caplog.at_level("WARNING"):
        fixup(network)
    assert "Fixup is meant to replace them (norm=none)" in caplog.text
    assert all(torch.all(block.conv2.weight == 0) for block in blocks_of(network))


def test_fixup_bad_mode():
    with pytest.raises(ConfigError, match=r"init.mode='fan_avg' is not one of \['fan_in', 'fan_out'\]"):
        fixup(resnet(depth=1, width=4), mode="fan_avg")
