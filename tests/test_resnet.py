"""model=resnet: a small residual net that builds from the config, with any norm, and trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from trainlab.models.factory import build_network
from trainlab.models.resnet import ResidualBlock, ResNet
from trainlab.norm import batchnorm, none
from trainlab.utils.config import check_arguments

from conftest import full_batch_losses

CONF = Path(__file__).resolve().parents[1] / "conf"
RELU = {"_target_": "torch.nn.ReLU", "_partial_": True}


def resnet_cfg(**overrides) -> dict:
    """conf/model/resnet.yaml's architecture (without the deprecated weight-source aliases)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "resnet.yaml"))
    return {**{k: v for k, v in cfg.items() if not k.startswith("pretrained")}, **overrides}


def residual_blocks(network: nn.Module) -> list[ResidualBlock]:
    return [m for m in network.modules() if isinstance(m, ResidualBlock)]


def test_config_builds_the_default_resnet():
    cfg = resnet_cfg()
    check_arguments(cfg, "model")
    assert (cfg["depth"], cfg["width"], cfg["stages"]) == (6, 16, 3)
    network = build_network(cfg, {"_target_": "trainlab.norm.none", "_partial_": True}, RELU, (3, 32, 32), 10)
    assert isinstance(network, ResNet) and len(residual_blocks(network)) == 6
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("depth", "stages", "per_stage"),
    [(6, 3, [2, 2, 2]), (4, 3, [2, 1, 1]), (2, 3, [1, 1]), (5, 1, [5]), (1, 2, [1])],
)
def test_depth_counts_residual_blocks_split_over_stages(depth, stages, per_stage):
    network = ResNet((1, 28, 28), 10, none, nn.ReLU, depth=depth, width=4, stages=stages)
    names = [n for n in network.blocks._modules if n != "stem"]
    assert len(names) == depth == len(residual_blocks(network))
    counts = [sum(n.startswith(f"stage{s + 1}_") for n in names) for s in range(len(per_stage))]
    assert counts == per_stage


def test_stages_double_channels_and_halve_the_map():
    network = ResNet((3, 28, 28), 10, none, nn.ReLU, depth=3, width=8, stages=3)
    shapes = []
    x = torch.randn(2, 3, 28, 28)
    for block in network.blocks:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8, 28, 28), (8, 28, 28), (16, 14, 14), (32, 7, 7)]
    first, second, third = residual_blocks(network)
    assert isinstance(first.shortcut, nn.Identity)  # identity skip where the shape is kept
    for downsampling in (second, third):  # a 1x1 stride-2 projection where it is not
        assert isinstance(downsampling.shortcut[0], nn.Conv2d) and downsampling.shortcut[0].stride == (2, 2)
    assert network.head.in_features == 32


def test_tiny_inputs_stop_downsampling_at_one_pixel():
    network = ResNet((1, 2, 2), 3, none, nn.ReLU, depth=4, width=4, stages=4)
    assert network(torch.randn(2, 1, 2, 2)).shape == (2, 3)


# native (a timm model's own layers) is an error with trainlab's networks: tests/test_timm_axes.py
NORMS = sorted(p.stem for p in (CONF / "norm").glob("*.yaml") if p.stem != "native")


@pytest.mark.parametrize("norm_name", NORMS)
@pytest.mark.parametrize("position", ["pre_act", "post_act"])
def test_every_norm_factory_and_position(norm_name, position):
    norm_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "norm" / f"{norm_name}.yaml"))
    norm_cfg["position"] = position
    if "groups" in norm_cfg:
        norm_cfg["groups"] = 4  # must divide the channels of every layer
    if "virtual_batch_size" in norm_cfg:
        norm_cfg["virtual_batch_size"] = 4
    torch.manual_seed(0)
    network = build_network(resnet_cfg(depth=3, width=8, stages=2), norm_cfg, RELU, (3, 16, 16), 10)
    out = network(torch.randn(8, 3, 16, 16))
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    out.sum().backward()
    block = residual_blocks(network)[0]
    has_norm = norm_name != "none"
    assert block.has_norm == has_norm
    # a conv drops its bias only where the norm after it cancels a per-channel bias
    cancels_bias = norm_name in ("batchnorm", "batchnorm_scratch", "ghost_batchnorm", "instancenorm")
    assert (block.conv2.bias is None) == cancels_bias
    names = [n for n, _ in block.named_children()]
    expected_order = ["norm1", "act"] if position == "pre_act" else ["act", "norm1"]
    assert names[:4] == ["conv1", *expected_order, "conv2"]


def test_fixup_scalars_exist_frozen_at_identity_values():
    network = ResNet((1, 8, 8), 10, none, nn.ReLU, depth=2, width=4)
    for block in residual_blocks(network):
        assert block.fixup_scale.item() == 1.0 and not block.fixup_scale.requires_grad
        assert [b.item() for b in block.fixup_biases] == [0.0] * 4
        assert not any(b.requires_grad for b in block.fixup_biases)
    # same layout whatever the init: a fresh network loads any checkpoint's state dict
    other = ResNet((1, 8, 8), 10, none, nn.ReLU, depth=2, width=4)
    with torch.no_grad():
        residual_blocks(network)[0].fixup_scale.fill_(0.5)
    other.load_state_dict(network.state_dict())
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(other(x), network(x))


def test_block_computes_shortcut_plus_branch():
    torch.manual_seed(0)
    block = ResidualBlock(4, 4, 1, none, nn.ReLU, "pre_act")
    x = torch.randn(2, 4, 6, 6)
    branch = block.conv2(torch.relu(block.conv1(x)))
    torch.testing.assert_close(block(x), x + branch)


def test_bad_arguments():
    with pytest.raises(ValueError, match="model=resnet needs model.depth, model.width and model.stages >= 1"):
        ResNet((1, 8, 8), 10, none, nn.ReLU, depth=0)
    with pytest.raises(ValueError, match=r"norm.position='middle' is not one of \['pre_act', 'post_act'\]"):
        ResNet((1, 8, 8), 10, batchnorm, nn.ReLU, position="middle")


def test_resnet_learns_a_few_steps():
    torch.manual_seed(0)
    network = instantiate(
        resnet_cfg(depth=2, width=8, stages=2),
        input_shape=(1, 8, 8),
        num_classes=3,
        norm=batchnorm,
        activation=nn.ReLU,
    )
    inputs = torch.randn(32, 1, 8, 8)
    labels = (inputs.mean((1, 2, 3)) > 0).long()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    losses = full_batch_losses(network, inputs, labels, optimizer, steps=15)
    assert losses[-1] < 0.5 * losses[0]
