"""model.dropout: no module at 0 (the network of old), Dropout/Dropout2d after the hidden blocks
otherwise, active in train mode only; bad probabilities are errors naming the setting. And the
ready study experiment=bn_dropout composes and trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.models.factory import build_network
from trainlab.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
RELU = {"_target_": "torch.nn.ReLU", "_partial_": True}
BATCHNORM = {"_target_": "trainlab.norm.batchnorm", "_partial_": True}
SHAPE = (1, 8, 8)
# (model, dropout class for its hidden blocks); small enough to build in milliseconds
MODELS = [("mlp", nn.Dropout), ("cnn", nn.Dropout2d), ("resnet", nn.Dropout2d)]
SMALL = {
    "mlp": {"width": 16},
    "cnn": {"depth": 2, "width": 4},
    "resnet": {"depth": 2, "width": 4, "stages": 2},
}


def model_cfg(name: str, **overrides) -> dict:
    """conf/model/<name>.yaml's architecture, shrunk, without the deprecated weight-source aliases."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("pretrained")}
    return {**cfg, **SMALL[name], **overrides}


def build(cfg: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(cfg, BATCHNORM, RELU, SHAPE, 10)


def dropouts(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if isinstance(m, nn.Dropout | nn.Dropout2d)]


@pytest.mark.parametrize("name", [m for m, _ in MODELS])
def test_dropout_zero_builds_the_network_without_dropout(name):
    """The configs default to 0.0, and 0.0 builds the very network a config without the key
    builds: the same modules, state_dict keys, weights and outputs (old checkpoints still load)."""
    assert OmegaConf.load(CONF / "model" / f"{name}.yaml").dropout == 0.0
    without = {k: v for k, v in model_cfg(name).items() if k != "dropout"}
    old, new = build(without), build(model_cfg(name, dropout=0.0))
    assert not dropouts(new)
    assert [(n, type(m)) for n, m in new.named_modules()] == [(n, type(m)) for n, m in old.named_modules()]
    assert list(new.state_dict()) == list(old.state_dict())
    new.load_state_dict(old.state_dict())  # strict: the layouts match
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(new.eval()(x), old.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "kind"), MODELS)
def test_dropout_acts_in_train_mode_only(name, kind):
    network = build(model_cfg(name, dropout=0.5))
    layers = dropouts(network)
    hidden = {"mlp": 2, "cnn": 2 * 2, "resnet": 2}[
        name
    ]  # mlp: depth blocks; cnn: every conv; resnet: every branch
    assert len(layers) == hidden and all(type(m) is kind and m.p == 0.5 for m in layers)
    assert list(build(model_cfg(name, dropout=0.5)).state_dict()) == list(build(model_cfg(name)).state_dict())
    x = torch.randn(8, *SHAPE)
    network.train()
    assert all(m.training for m in layers)
    assert not torch.equal(network(x), network(x))  # a fresh mask each pass
    network.eval()
    assert not any(m.training for m in layers)
    torch.testing.assert_close(network(x), network(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", [m for m, _ in MODELS])
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5", True])
def test_a_bad_dropout_names_the_setting(name, bad):
    with pytest.raises(ValueError, match=r"model\.dropout=.* must be a probability in \[0, 1\)"):
        build(model_cfg(name, dropout=bad))


def test_bn_dropout_study_composes_and_one_job_trains(make_cfg):
    cfg = make_cfg(
        "experiment=bn_dropout",
        "norm=none",
        "model.dropout=0.5",
        "data.train_size=64",
        "model.width=16",
        "logger=none",
        "trainer.max_epochs=1",
        "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1",
    )
    assert cfg.data.source._target_.endswith("mnist5k") and cfg.model._target_.endswith("MLP")
    assert cfg.model.dropout == 0.5 and cfg.norm._target_.endswith("none")
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 1  # 64 examples, batches of 64
    assert 0 <= summary["metrics"]["test/acc"] <= 1
