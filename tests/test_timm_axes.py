"""model=timm takes the norm and activation axes as timm's norm_layer / act_layer: the chosen layers
replace the architecture's own, the defaults (norm=native, activation=native) keep them, and a
choice the architecture cannot take is a ConfigError before training that names what works."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import get_act_layer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.testing import assert_close

from trainlab import builders, checks
from trainlab.layers import traits
from trainlab.models.classifier import Classifier
from trainlab.models.factory import build_network
from trainlab.norm import BatchNormScratch, GhostBatchNorm
from trainlab.tracking.tracked_config import tracked_config
from trainlab.transfer import WeightSources, load_pretrained
from trainlab.utils.config import ConfigError, plain

TIMM = {"_target_": "trainlab.models.timm_backbone.timm_network", "use_axes": True}
GROUPNORM = {"_target_": "trainlab.norm.groupnorm", "_partial_": True, "groups": 8}
SILU = {"_target_": "torch.nn.SiLU", "_partial_": True}
NATIVE_NORM = {"_target_": "trainlab.norm.native", "_partial_": True}
NATIVE_ACT = {"_target_": "trainlab.activations.native", "_partial_": True}
SHAPE = (1, 28, 28)


def network(cfg, shape=SHAPE) -> nn.Module:
    """The network `python -m trainlab.train <overrides>` builds, for data of `shape`."""
    checks.check_config(cfg)
    return build_network(plain(cfg.model), plain(cfg.norm), plain(cfg.activation), shape, 10)


def count(net: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_groupnorm_and_silu_from_the_command_line(make_cfg, name):
    cfg = make_cfg("model=timm", f"model.name={name}", "norm=groupnorm", "norm.groups=8", "activation=silu")
    net = network(cfg)
    assert count(net, nn.GroupNorm) > 0 and count(net, _BatchNorm) == 0
    assert count(net, nn.SiLU) > 0 and count(net, nn.ReLU) == 0
    assert all(m.num_groups == 8 for m in net.modules() if isinstance(m, nn.GroupNorm))
    assert net(torch.zeros(2, *SHAPE)).shape == (2, 10)
    # the W&B config and tags show the layers the network has
    tracked = tracked_config(cfg)
    assert (tracked["norm"], tracked["activation"]) == ("groupnorm", "silu")
    assert tracked["hparams"]["norm"]["groups"] == 8
    assert {"norm:groupnorm", "activation:silu"} <= set(builders.study_tags(cfg))


def module_types(net: nn.Module) -> list[str]:
    return [type(m).__name__ for m in net.modules()]


@pytest.mark.parametrize(
    ("name", "extra", "own"),
    [
        ("test_resnet", [], ("BatchNorm2d", "ReLU")),
        ("test_vit", ["+model.patch_size=4"], ("LayerNorm", "GELU")),
    ],
)
def test_defaults_keep_the_architectures_own_layers(make_cfg, name, extra, own):
    cfg = make_cfg("model=timm", f"model.name={name}", *extra)
    assert (cfg.norm._target_, cfg.activation._target_) == (NATIVE_NORM["_target_"], NATIVE_ACT["_target_"])
    net = network(cfg)
    kwargs = {"patch_size": 4, "img_size": 28} if extra else {}
    untouched = timm.create_model(name, num_classes=10, in_chans=1, **kwargs)
    assert module_types(net) == module_types(untouched)
    assert set(own) <= set(module_types(net))
    tracked = tracked_config(cfg)
    assert (tracked["norm"], tracked["activation"]) == ("native", "native")
    assert {"norm:native", "activation:native"} <= set(builders.study_tags(cfg))


def test_an_experiments_or_the_users_choice_wins_over_native(make_cfg):
    assert make_cfg("norm=groupnorm", "model=timm").norm._target_ == "trainlab.norm.groupnorm"
    assert make_cfg("model=timm", "experiment=dead_relu").norm._target_ == "trainlab.norm.none"
    assert make_cfg().norm._target_ == "trainlab.norm.batchnorm"  # trainlab's models: unchanged


def test_layernorm_is_over_each_example_on_feature_maps_and_over_each_token_on_vits(make_cfg):
    convnet = network(make_cfg("model=timm", "model.name=test_resnet", "norm=layernorm"))
    assert count(convnet, nn.GroupNorm) > 0 and count(convnet, _BatchNorm) == 0
    assert all(m.num_groups == 1 for m in convnet.modules() if isinstance(m, nn.GroupNorm))
    vit = network(make_cfg("model=timm", "model.name=test_vit", "+model.patch_size=4", "norm=layernorm"))
    assert count(vit, nn.LayerNorm) > 0 and count(vit, nn.GroupNorm) == 0


def test_a_norm_the_architecture_cannot_take_names_what_works(make_cfg):
    cfg = make_cfg("model=timm", "model.name=test_vit", "+model.patch_size=4", "norm=batchnorm")
    with pytest.raises(ConfigError) as error:
        network(cfg)
    message = str(error.value)
    assert "model=timm (test_vit) with norm=batchnorm" in message and "4D input" in message
    assert "takes norm in ['native', 'layernorm', 'none']" in message  # conf/norm's options that work
    assert (
        "activation in ['native', 'elu', 'gelu', 'leaky_relu', 'relu', 'sigmoid', 'silu', 'tanh']" in message
    )


def test_groups_that_do_not_divide_the_channels(make_cfg):
    cfg = make_cfg("model=timm", "model.name=test_resnet", "norm=groupnorm", "norm.groups=7")
    with pytest.raises(ConfigError, match=r"norm=groupnorm \(norm.groups=7.*divisible"):
        network(cfg)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["activation=maxout"],
            r"activation trainlab.activations.maxout.Maxout cannot be .* \(maxout widens the layer before "
            r"it.*takes activation in \['native', 'elu', .*'tanh'\]",
        ),
        (["norm=batchnorm", "norm.position=post_act"], r"norm.position='post_act'.*places its norm layers"),
    ],
)
def test_maxout_and_post_act_placement_are_refused(make_cfg, overrides, match):
    with pytest.raises(ConfigError, match=match):
        network(make_cfg("model=timm", "model.name=test_resnet", *overrides))


@pytest.mark.parametrize(
    ("option", "layer", "knob"),
    [
        ("batchnorm_scratch", BatchNormScratch, "norm.momentum=0.2"),
        ("ghost_batchnorm", GhostBatchNorm, "norm.virtual_batch_size=2"),
    ],
)
def test_trainlabs_own_norms_are_themselves_in_a_timm_model(make_cfg, option, layer, knob):
    """Undeclared factories are offered to timm as themselves (trainlab.layers.timm_offers): on
    test_resnet's feature maps every BatchNorm2d becomes the option's layer, with its knobs."""
    net = network(make_cfg("model=timm", "model.name=test_resnet", f"norm={option}", knob))
    own = [m for m in net.modules() if isinstance(m, layer)]
    assert own and count(net, nn.BatchNorm2d) == 0
    name, value = knob.removeprefix("norm.").split("=")
    assert all(float(getattr(m, name)) == float(value) for m in own)
    assert net.train()(torch.randn(4, *SHAPE)).shape == (4, 10)  # batch statistics in training mode


@pytest.mark.parametrize("option", ["batchnorm_scratch", "instancenorm"])
def test_a_norm_for_feature_maps_is_refused_on_a_vits_tokens(make_cfg, option):
    """A layer built for feature maps may run on a ViT's (N, L, C) without an error and normalise
    the wrong axes: the first forward checks the layout it was offered for."""
    cfg = make_cfg("model=timm", "model.name=test_vit", "+model.patch_size=4", f"norm={option}")
    with pytest.raises(ConfigError, match=r"is offered to timm for feature maps \(N, C, H, W\).* 3-D inputs"):
        network(cfg)


@pytest.mark.parametrize("axis", ["norm", "activation"])
def test_native_needs_an_architecture_of_its_own(make_cfg, axis):
    with pytest.raises(ConfigError, match=f"{axis}=native keeps an architecture's own"):
        network(make_cfg("model=mlp", f"{axis}=native"))


def test_a_model_config_without_use_axes_keeps_its_own_layers():
    """Checkpoints written before timm models took the axes hold norm=batchnorm activation=relu (the
    defaults then, ignored) and no use_axes: they are rebuilt as they were trained."""
    model = {"_target_": TIMM["_target_"], "name": "test_efficientnet"}
    net = build_network(model, GROUPNORM, {"_target_": "torch.nn.ReLU", "_partial_": True}, SHAPE, 10)
    assert count(net, nn.GroupNorm) == 0 and count(net, nn.ReLU) == 0 and count(net, nn.SiLU) > 0


def test_a_run_fails_before_training(make_cfg):
    from trainlab.train import train

    cfg = make_cfg(
        "model=timm",
        "model.name=test_vit",
        "+model.patch_size=4",
        "norm=groupnorm",
        "data=digits",
        "logger=csv",
    )
    with pytest.raises(ConfigError, match="takes norm in"):
        train(cfg)


def test_pretrained_weights_fine_tune_another_norm(tmp_path):
    """BatchNorm weights into a GroupNorm network: convolutions and the norm's scale and shift load,
    BatchNorm's running statistics have no place and are reported unused."""
    torch.manual_seed(0)
    state = timm.create_model("test_resnet", num_classes=1000, in_chans=1).state_dict()
    torch.save(state, tmp_path / "weights.pth")
    spec = {
        "model": {**TIMM, "name": "test_resnet"},
        "norm": GROUPNORM,
        "activation": SILU,
        "input_shape": list(SHAPE),
        "num_classes": 3,
    }
    model = Classifier(network=spec, optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1})
    report = load_pretrained(
        WeightSources("finetune", pretrained_file=str(tmp_path / "weights.pth")), model.net, spec
    )
    block = model.net.layer1[0]
    assert isinstance(block.bn1, nn.GroupNorm)
    assert_close(block.conv1.weight, state["layer1.0.conv1.weight"])
    assert_close(block.bn1.weight, state["layer1.0.bn1.weight"])
    assert_close(block.bn1.bias, state["layer1.0.bn1.bias"])
    assert "layer1.0.bn1.running_mean" in report.unused
    assert any(
        "norm=trainlab.norm.groupnorm" in note and "running statistics" in note for note in report.notes
    )


@pytest.mark.parametrize(
    ("name", "gain", "bounds"),
    [("gelu", "relu", None), ("sigmoid", "sigmoid", (0.0, 1.0)), ("tanh", "tanh", (-1.0, 1.0))],
)
def test_timms_own_activation_classes_are_known_activations(name, gain, bounds):
    """timm gives its own classes for gelu, sigmoid and tanh: the init gains and the layer
    statistics (dead and saturated units) must see them as the functions they are."""
    layer = get_act_layer(name)()
    assert type(layer).__module__ == "timm.layers.activations"
    assert traits.init_nonlinearity(layer) == (gain, None)
    assert traits.saturation_bounds(layer) == bounds and traits.is_activation(layer)


def test_a_model_too_small_for_the_data_is_not_blamed_on_the_option(make_cfg):
    """test_convnext's stem and downsampling leave nothing of 28x28 digits, whatever its layers."""
    with pytest.raises(ConfigError, match=r"model=timm \(test_convnext\) does not run on the data's input"):
        network(make_cfg("model=timm", "model.name=test_convnext", "activation=relu"))
