"""examples/my_study: a study that extends trainlab from its own folder (its configs on Hydra's
search path, its module on the import path) trains with no edit of trainlab. The installed-package
way (trainlab-train --config-dir ...) is in test_package.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from torch import nn

from trainlab import checks
from trainlab.layers import traits
from trainlab.models.factory import build_network
from trainlab.models.mlp import MLP
from trainlab.norm import none
from trainlab.train import train
from trainlab.utils.compose import compose_run_config
from trainlab.utils.config import plain

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_study"
QUICK = [
    "trainer.max_steps=3",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "logger=none",
    "callbacks=none",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
]


@pytest.fixture
def my_study(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import my_study

    return my_study


def test_the_sparse_init_gives_each_unit_its_nonzero_weights(my_study):
    torch.manual_seed(0)
    network = MLP((1, 4, 4), 3, none, nn.ReLU, depth=2, width=32)
    stats = my_study.sparse(network, nonzero=5, std=2.0, bias=0.1)
    layers = [m for m in network.modules() if isinstance(m, nn.Linear)]
    for layer in layers:
        assert ((layer.weight != 0).sum(dim=1) == 5).all()  # 16 and 32 inputs: exactly 5 per unit
        assert (layer.bias == 0.1).all()
    weights = torch.cat([layer.weight[layer.weight != 0] for layer in layers])
    assert weights.std().item() == pytest.approx(2.0, rel=0.15)
    assert stats["sparse_density"] == pytest.approx(5 * (32 + 32 + 3) / (32 * 16 + 32 * 32 + 3 * 32))


def test_the_channel_groups_norm_keeps_channels_per_group(my_study):
    assert my_study.channel_groups(64, spatial=False).num_groups == 16
    assert my_study.channel_groups(12, spatial=True, channels_per_group=5).num_groups == 2  # divides 12
    assert my_study.channel_groups(3, spatial=True).num_groups == 1


@pytest.mark.slow
def test_the_example_study_trains_from_its_own_folder(my_study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    searchpath = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
    cfg = compose_run_config([searchpath, "experiment=my_study", *QUICK], tmp_path / "run")
    choices = HydraConfig.get().runtime.choices
    assert (choices.init, choices.norm, choices.augment) == ("sparse", "channel_groups", "small_shifts")
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert summary["init_stats"]["sparse_density"] == pytest.approx(15 / 64)  # mlp of width 64


TIMM_RESNET = [
    "model=timm",
    "model.name=test_resnet",
    "data=digits",
    "norm=channel_groups",
    "activation=swish_beta",
]


def test_the_studys_norm_and_activation_are_a_timm_models_layers(my_study, tmp_path):
    """Neither declares anything for timm: the norm factory is offered as itself on feature maps
    and the activation class as itself (timm's `inplace` dropped, as SwishBeta takes none)."""
    searchpath = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
    cfg = compose_run_config(
        [searchpath, *TIMM_RESNET, "norm.channels_per_group=8", "activation.beta=1.5"], tmp_path / "run"
    )
    checks.check_config(cfg)
    net = build_network(plain(cfg.model), plain(cfg.norm), plain(cfg.activation), (1, 8, 8), 10)
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    activations = [m for m in net.modules() if isinstance(m, my_study.SwishBeta)]
    assert norms and not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in net.modules())
    assert all(m.num_groups == m.num_channels // 8 for m in norms)  # channel_groups' rule, not timm's 32
    assert {type(net.layer1[0].bn1), type(net.layer1[0].act1)} == {nn.GroupNorm, my_study.SwishBeta}
    assert len(activations) >= 4 and all(m.beta.item() == 1.5 for m in activations)
    assert all(traits.is_rectifier(m) and traits.init_nonlinearity(m) == ("relu", None) for m in activations)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_the_studys_norm_and_activation_train_in_a_timm_model(my_study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    searchpath = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
    cfg = compose_run_config(
        [searchpath, *TIMM_RESNET, "trusted_targets=[my_study]", *QUICK], tmp_path / "run"
    )
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 3
