"""model=timm: any timm model with a new head and the data's channels; weights from a local file
(timm's own mechanism) or a trainlab checkpoint; offline hub requests fail fast and say what to do."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

from trainlab.models import timm_weights
from trainlab.models.classifier import Classifier
from trainlab.models.timm_backbone import timm_network
from trainlab.train import train
from trainlab.transfer import WeightSources, load_pretrained, split_network
from trainlab.utils.config import ConfigError

from test_transfer_policies import classifier
from test_transfer_pretrained import trained_checkpoint

TIMM = {"_target_": "trainlab.models.timm_backbone.timm_network", "name": "test_resnet"}
BATCHNORM = {"_target_": "trainlab.norm.batchnorm", "_partial_": True}
RELU = {"_target_": "torch.nn.ReLU", "_partial_": True}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


def timm_classifier(channels: int = 1, size: int = 8, **model_keys) -> Classifier:
    network = {
        "model": {**TIMM, **model_keys},
        "norm": BATCHNORM,
        "activation": RELU,
        "input_shape": [channels, size, size],
        "num_classes": 3,
    }
    return Classifier(network=network, optimizer=SGD)


def load(model: Classifier, **sources):
    """`load_pretrained` as trainlab.builders.build_model calls it: the transfer settings, the network."""
    return load_pretrained(WeightSources("finetune", **sources), model.net, model.hparams["network"])


@pytest.fixture
def imagenet_like_weights(tmp_path):
    """A weights file as the hub would give it: RGB input, a 1000-class classifier."""
    torch.manual_seed(5)
    source = timm.create_model("test_resnet", num_classes=1000, in_chans=3)
    state = source.state_dict()
    torch.save(state, tmp_path / "weights.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "weights.safetensors")
    return state, tmp_path


def test_grey_data_new_head_and_stages():
    net = timm_network((1, 28, 28), 10, name="test_resnet")
    assert net.conv1[0].in_channels == 1 and net.get_classifier().out_features == 10
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    split = split_network(net)
    assert split.names == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4"]
    assert split.head.keys == ("fc.weight", "fc.bias")
    vit = timm_network((1, 28, 28), 10, name="test_vit", patch_size=4)  # img_size follows the data
    assert vit(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert split_network(vit).names[0] == "cls_token+pos_embed+patch_embed"
    assert split_network(vit).names[-1] == "blocks.5+norm"  # the final norm closes the last stage


@pytest.mark.parametrize("filename", ["weights.pth", "weights.safetensors"])
def test_weights_file_round_trip(imagenet_like_weights, filename):
    state, folder = imagenet_like_weights
    model = timm_classifier(channels=3)
    head_before = model.net.fc.weight.detach().clone()
    report = load(model, pretrained_file=str(folder / filename))
    loaded = model.net.state_dict()
    for key in split_network(model.net).backbone_keys():
        assert_close(loaded[key], state[key])
    assert torch.equal(model.net.fc.weight, head_before)  # 3 classes: a new head, not the file's 1000
    assert "fc.weight" in report.unused and report.head == ["fc.weight", "fc.bias"]


def test_weights_file_on_grey_data_adapts_the_first_conv(imagenet_like_weights):
    state, folder = imagenet_like_weights
    model = timm_classifier(channels=1)
    load(model, pretrained_file=str(folder / "weights.safetensors"))
    # timm's adapt_input_conv: RGB filters summed over the colour channels
    assert_close(model.net.conv1[0].weight, state["conv1.0.weight"].sum(dim=1, keepdim=True))
    assert_close(model.net.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])


def test_trainlab_checkpoint_round_trip_with_timm(tmp_path):
    source = timm_classifier()
    path = trained_checkpoint(source, tmp_path / "source.ckpt")
    target = timm_classifier()
    report = load(target, pretrained_ckpt=str(path), pretrained_depth=2)
    saved = torch.load(path, weights_only=True)["state_dict"]
    stages = split_network(target.net).stages
    for key in stages[0].keys + stages[1].keys:
        assert_close(target.net.state_dict()[key], saved[f"net.{key}"])
    assert "stages conv1+bn1, layer1 (2 of 5)" in report.text()


def test_a_checkpoint_of_another_model_shares_nothing(tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "cnn.ckpt")
    with pytest.raises(ConfigError, match="share no backbone tensor with this network"):
        load(timm_classifier(), pretrained_ckpt=str(path))


def test_building_never_loads_weights(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the hub must not be asked while a network is built")

    monkeypatch.setattr(timm_weights, "hub_reachable", no_network)
    # what a checkpoint's hyperparameters rebuild: the architecture alone, no weights
    model = timm_classifier()
    assert model.net.eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


def no_connections(monkeypatch) -> list:
    """Record (instead of opening) every TCP connection; the list of attempted addresses."""
    import socket

    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise ConnectionRefusedError("tests open no connections")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_offline_hub_request_fails_fast_and_names_pretrained_file(monkeypatch):
    """Offline, the error comes from the probe's answer: no download is tried."""
    monkeypatch.setattr(timm_weights, "hub_reachable", lambda *args, **kwargs: False)
    monkeypatch.setattr(timm_weights, "cached_weights", lambda cfg: None)
    attempts = no_connections(monkeypatch)
    with pytest.raises(ConfigError, match=r"offline .*transfer\.pretrained_file=<path to the file>"):
        load(timm_classifier(), pretrained=True)
    assert attempts == []


def test_hub_probe_is_bounded_and_honours_hf_hub_offline(monkeypatch):
    import socket
    import threading

    from trainlab.utils import internet

    for proxy in ("HTTPS_PROXY", "https_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(proxy, raising=False)
    release = threading.Event()
    attempts = []

    def hangs(address, timeout=None):  # a connection (or a name lookup) that never answers
        attempts.append(address)
        release.wait()
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hangs)
    monkeypatch.setattr(internet, "PROBE_TIMEOUT_S", 0.01)
    try:
        assert timm_weights.hub_reachable() is False  # the probe's thread gives up waiting
    finally:
        release.set()
    assert attempts == [("huggingface.co", 443)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert timm_weights.hub_reachable() is False and len(attempts) == 1  # not even tried


def test_bad_timm_settings_are_clear_errors(tmp_path):
    with pytest.raises(
        ConfigError, match="model.name='resnet18x' is not a timm model.*Close names: resnet18, resnet18d"
    ):
        timm_network((1, 8, 8), 3, name="resnet18x")
    with pytest.raises(ConfigError, match="transfer.pretrained_file='.*missing.pth' is not a file"):
        load(timm_classifier(), pretrained_file=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="transfer=scratch"):
        WeightSources("scratch", pretrained_file="x.pth")


def test_fast_dev_run_with_a_timm_model(make_cfg):
    summary = train(
        make_cfg("model=timm", "model.name=test_resnet", "data=digits", "debug=fdr", "logger=csv")
    )
    assert summary["status"] == "completed" and summary["global_step"] == 1
