"""Transfer policies freeze exactly what they say, keep frozen BN statistics, unfreeze on schedule
and give the optimizer the right groups and learning rates."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from trainlab.models.classifier import Classifier
from trainlab.models.regression import NoisyRegression
from trainlab.train import train
from trainlab.transfer import Split, TransferNetwork, TransferPolicy, blocks_and_head, split_network
from trainlab.utils.config import ConfigError, plain

from conftest import read_summary

BATCHNORM = {"_target_": "trainlab.norm.batchnorm", "_partial_": True, "position": "pre_act"}
RELU = {"_target_": "torch.nn.ReLU", "_partial_": True}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
MODELS = {
    "cnn": {"_target_": "trainlab.models.cnn.CNN", "depth": 2, "width": 4},  # 2 stages (2 convs + pool)
    "mlp": {"_target_": "trainlab.models.mlp.MLP", "depth": 3, "width": 8},  # 3 stages
}


def classifier(model: str = "cnn", optimizer: dict = SGD, scheduler: dict | None = None) -> Classifier:
    torch.manual_seed(0)
    network = {
        "model": MODELS[model],
        "norm": BATCHNORM,
        "activation": RELU,
        "input_shape": [1, 8, 8],
        "num_classes": 3,
    }
    return Classifier(network=network, optimizer=optimizer, scheduler=scheduler)


def loader(n: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def fit(model: Classifier, callbacks: list, epochs: int = 1, logger=False) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train_dataloaders=loader(), val_dataloaders=loader(32))
    return trainer


def policy(make_cfg, *overrides: str) -> TransferPolicy:
    """The callback a `transfer=...` config builds (the YAML files are what is tested)."""
    return instantiate(make_cfg(*overrides).transfer)


def snapshot(model: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def params_of(stage, model) -> dict[str, torch.nn.Parameter]:
    return stage.parameters(model.net)


# --- stages ------------------------------------------------------------------------------------


def test_stages_of_trainlab_networks():
    mlp = split_network(classifier("mlp").net)
    assert mlp.names == ["blocks.0", "blocks.1", "blocks.2"] and mlp.head.keys == ("head.weight", "head.bias")
    cnn = split_network(classifier("cnn").net)  # conv, conv, pool | conv, conv, pool
    assert cnn.names == ["blocks.0-2", "blocks.3-5"]
    assert [sum(k.endswith("0.weight") for k in s.keys) for s in cnn.stages] == [2, 2]  # two convs each
    assert all(any("running_mean" in k for k in s.keys) for s in cnn.stages)  # BN statistics belong too
    from trainlab.models.factory import build_network

    resnet = build_network(
        {"_target_": "trainlab.models.resnet.ResNet", "depth": 2, "width": 4, "stages": 2},
        BATCHNORM,
        RELU,
        (1, 8, 8),
        3,
    )
    assert split_network(resnet).names == ["blocks.stem", "blocks.stage1_block1", "blocks.stage2_block1"]


def test_a_network_without_the_protocol_is_a_clear_error():
    class Plain(torch.nn.Module):  # blocks and a head, but no transfer_split()
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.Sequential(torch.nn.Linear(4, 4))
            self.head = torch.nn.Linear(4, 2)

    with pytest.raises(
        ConfigError,
        match=r"test_transfer_policies.*Plain: it does not implement .*TransferNetwork.*no `transfer_split\(\)` method",
    ):
        split_network(Plain())

    class Declared(Plain):
        def transfer_split(self) -> Split:
            return blocks_and_head(self)

    assert isinstance(Declared(), TransferNetwork) and not isinstance(Plain(), TransferNetwork)
    assert split_network(Declared()).names == ["blocks.0"]
    for model in ("mlp", "cnn"):  # trainlab's own networks implement it themselves
        assert isinstance(classifier(model).net, TransferNetwork)


# --- what each policy freezes ------------------------------------------------------------------

POLICIES = [
    (["transfer=scratch"], 0),
    (["transfer=finetune"], 0),
    (["transfer=linear_probe"], "all"),
    (["transfer=partial", "transfer.freeze_depth=1"], 1),
    (["transfer=partial", "transfer.freeze_depth=2"], 2),
]


@pytest.mark.parametrize("model", ["cnn", "mlp"])
@pytest.mark.parametrize(("overrides", "frozen"), POLICIES)
def test_policy_freezes_exactly_its_stages(make_cfg, model, overrides, frozen):
    net = classifier(model)
    split = split_network(net.net)
    depth = len(split.stages) if frozen == "all" else frozen
    before = snapshot(net)
    fit(net, [policy(make_cfg, *overrides)])
    after = net.net.state_dict()
    for index, stage in enumerate(split.stages):
        is_frozen = index < depth
        for name, param in params_of(stage, net).items():
            assert param.requires_grad is not is_frozen, (overrides, stage.name, name)
        same = [torch.equal(before[k], after[k]) for k in stage.keys]
        if is_frozen:  # parameters and BN statistics: all unchanged
            assert all(same), (overrides, stage.name)
        else:
            assert not all(same), (overrides, stage.name)
    for key in split.head.keys:  # the head always trains
        assert not torch.equal(before[key], after[key])
        assert dict(net.net.named_parameters())[key].requires_grad


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics(make_cfg):
    net = classifier("cnn")
    stage0 = split_network(net.net).stages[0]
    modes = []

    class RecordModes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(([m.training for m in stage0.norm_layers(pl_module.net)], pl_module.training))

    before = snapshot(net)
    fit(net, [policy(make_cfg, "transfer=partial", "transfer.freeze_depth=1"), RecordModes()], epochs=2)
    # also after the validation loop between the epochs, frozen BN is in eval mode
    assert len(modes) == 8 and all(not any(norm_modes) and module for norm_modes, module in modes)
    after = net.net.state_dict()
    for key in stage0.keys:  # running_mean, running_var, num_batches_tracked included
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["blocks.3.1.running_mean"], after["blocks.3.1.running_mean"])


def test_precise_bn_leaves_the_statistics_of_frozen_batchnorm_alone(make_cfg):
    """PreciseBN recomputes BN statistics before each validation; those of a frozen stage
    (freeze_bn_stats) stay the pretrained ones, and the layers after it are recomputed from
    inputs normalised with them, as in training."""
    from trainlab.callbacks.precise_bn import PreciseBN

    net = classifier("cnn")
    stage0 = split_network(net.net).stages[0]
    before = snapshot(net)
    transfer = policy(make_cfg, "transfer=partial", "transfer.freeze_depth=1")
    fit(net, [transfer, PreciseBN(num_batches=2)])
    after = net.net.state_dict()
    assert stage0.norm_layers(net.net) == transfer.frozen_norm_layers(net)
    for key in stage0.keys:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["blocks.3.1.running_mean"], after["blocks.3.1.running_mean"])
    # a trainable layer's statistics are those of its inputs over the first 2 training batches,
    # in train mode as in training, frozen stage 0 in eval mode
    probe = dict(net.net.named_modules())["blocks.3.1"]
    recomputed = probe.running_mean.clone()
    inputs = []
    handle = probe.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    net.train()
    for norm in stage0.norm_layers(net.net):
        norm.eval()
    with torch.no_grad():
        for x, _ in list(loader())[:2]:
            net(x)
    handle.remove()
    channels = torch.cat([x.transpose(0, 1).flatten(1) for x in inputs], dim=1)
    assert torch.allclose(recomputed, channels.mean(1).to(recomputed.dtype), atol=1e-5)


def test_freeze_bn_stats_false_lets_frozen_bn_statistics_move(make_cfg):
    net = classifier("cnn")
    stage0 = split_network(net.net).stages[0]
    before = snapshot(net)
    fit(
        net,
        [policy(make_cfg, "transfer=partial", "transfer.freeze_depth=1", "transfer.freeze_bn_stats=false")],
    )
    after = net.net.state_dict()
    norms = stage0.norm_layers(net.net)
    assert norms and all(norm.training for norm in norms)
    assert not torch.equal(before["blocks.0.1.running_mean"], after["blocks.0.1.running_mean"])
    for key in params_of(stage0, net):  # scale and shift (and conv weights) stay frozen
        assert torch.equal(before[key], after[key]), key


# --- gradual unfreezing --------------------------------------------------------------------------


def test_gradual_schedule():
    gradual = TransferPolicy("gradual", freeze_depth="all", unfreeze_at_epoch=1, unfreeze_every=2)
    gradual.depth = 3
    assert [gradual.stages_to_unfreeze(e) for e in range(7)] == [
        [],
        [2],
        [2],
        [2, 1],
        [2, 1],
        [2, 1, 0],
        [2, 1, 0],
    ]


def test_gradual_unfreezes_one_stage_per_epoch_from_the_top(make_cfg):
    net = classifier("mlp")  # 3 stages
    stages = split_network(net.net).stages
    seen = []

    class Record(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            trainable = [all(p.requires_grad for p in s.parameters(pl_module.net).values()) for s in stages]
            seen.append((trainable, snapshot(pl_module)))

        def on_train_end(self, trainer, pl_module):
            seen.append((None, snapshot(pl_module)))

    fit(net, [policy(make_cfg, "transfer=gradual"), Record()], epochs=4)
    flags = [trainable for trainable, _ in seen[:-1]]
    assert flags == [[False, False, False], [False, False, True], [False, True, True], [True, True, True]]
    states = [state for _, state in seen]
    for index, stage in enumerate(stages):
        for epoch in range(4):  # a stage changes during an epoch exactly when it was trainable
            changed = any(not torch.equal(states[epoch][k], states[epoch + 1][k]) for k in stage.keys)
            assert changed == flags[epoch][index], (stage.name, epoch)


# --- optimizer groups and learning rates ---------------------------------------------------------

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}


def optimizer_at_start(make_cfg, model: Classifier, *overrides: str, scheduler: dict | None = None):
    found = {}

    class Grab(Callback):
        def on_train_start(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            found["groups"] = [
                {"name": g.get("name"), "lr": g["lr"], "params": {id(p) for p in g["params"]}}
                for g in optimizer.param_groups
            ]
            if trainer.lr_scheduler_configs:
                found["base_lrs"] = trainer.lr_scheduler_configs[0].scheduler.base_lrs

    fit(model, [policy(make_cfg, *overrides), Grab()])
    return found


def test_partial_with_discriminative_rates(make_cfg):
    cosine = plain(make_cfg().scheduler)
    net = classifier("cnn", optimizer=ADAM, scheduler=cosine)
    stage1 = split_network(net.net).stages[1]
    found = optimizer_at_start(
        make_cfg, net, "transfer=partial", "transfer.freeze_depth=1", "transfer.backbone_lr_mult=0.1"
    )
    head, backbone = found["groups"]
    assert head["name"] == "head" and head["lr"] == pytest.approx(0.01)
    assert backbone["name"] == "backbone" and backbone["lr"] == pytest.approx(0.001)  # lr * mult
    assert head["params"] == {id(p) for p in net.net.head.parameters()}
    assert backbone["params"] == {
        id(p) for p in stage1.parameters(net.net).values()
    }  # frozen stage 0: in none
    assert found["base_lrs"] == pytest.approx([0.01, 0.001])  # the schedule scales each group's own rate


def test_gradual_groups_hold_the_stages_to_unfreeze_from_the_start(make_cfg):
    net = classifier("mlp", optimizer=ADAM)
    found = optimizer_at_start(make_cfg, net, "transfer=gradual", "transfer.backbone_lr_mult=0.5")
    head, backbone = found["groups"]
    backbone_params = {id(p) for s in split_network(net.net).stages for p in s.parameters(net.net).values()}
    assert backbone["params"] == backbone_params and backbone["lr"] == pytest.approx(0.005)
    assert head["params"] == {id(p) for p in net.net.head.parameters()}


def test_without_freezing_or_rates_the_optimizer_gets_one_group(make_cfg):
    net = classifier("cnn", optimizer=ADAM)
    (group,) = optimizer_at_start(make_cfg, net, "transfer=finetune")["groups"]
    assert group["params"] == {id(p) for p in net.parameters()} and group["lr"] == pytest.approx(0.01)


def regression(regulariser: str = "noise") -> NoisyRegression:
    network = dict(classifier("cnn").hparams.network)
    return NoisyRegression(network=network, optimizer=ADAM, sigma=0.5, regulariser=regulariser)


def test_the_regression_module_applies_the_backbone_lr_multiplier(make_cfg):
    """Every study module gets the policy's groups (StudyModule), not only the Classifier."""
    net = regression()
    found = optimizer_at_start(make_cfg, net, "transfer=finetune", "transfer.backbone_lr_mult=0.1")
    head, backbone = found["groups"]
    assert head["name"] == "head" and head["lr"] == pytest.approx(0.01)
    assert backbone["name"] == "backbone" and backbone["lr"] == pytest.approx(0.001)
    assert head["params"] == {id(p) for p in net.net.head.parameters()}
    # with weight decay as the regulariser: each rate's group split into weights (2 s^2) and the rest (0)
    net = regression("weight_decay")
    groups = optimizer_at_start(make_cfg, net, "transfer=finetune", "transfer.backbone_lr_mult=0.1")["groups"]
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("head", pytest.approx(0.01)),
        ("head/1", pytest.approx(0.01)),
        ("backbone", pytest.approx(0.001)),
        ("backbone/1", pytest.approx(0.001)),
    ]
    assert groups[0]["params"] == {id(net.net.head.weight)} and groups[1]["params"] == {id(net.net.head.bias)}


# --- counts, checks, errors ----------------------------------------------------------------------


class MetricsLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict] = []

    name, version = "memory", 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append(dict(metrics))


def test_trainable_and_frozen_counts_are_logged(make_cfg):
    net = classifier("cnn")
    stage0 = split_network(net.net).stages[0]
    logger = MetricsLogger()
    fit(net, [policy(make_cfg, "transfer=partial", "transfer.freeze_depth=1")], logger=logger)
    counts = next(m for m in logger.metrics if "transfer/frozen_params" in m)
    total = sum(p.numel() for p in net.parameters())
    assert counts["transfer/frozen_params"] == stage0.numel(net.net) > 0
    assert counts["transfer/trainable_params"] + counts["transfer/frozen_params"] == total


def test_a_frozen_tensor_that_changes_fails_the_run(make_cfg):
    class Tamper(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            with torch.no_grad():
                pl_module.net.blocks[0][0].weight.add_(1.0)

    with pytest.raises(RuntimeError, match=r"frozen tensors changed during training: blocks\.0\.0\.weight"):
        fit(classifier("cnn"), [policy(make_cfg, "transfer=linear_probe"), Tamper()])


def test_freeze_depth_beyond_the_backbone_is_a_clear_error(make_cfg):
    with pytest.raises(ConfigError, match=r"freeze_depth=5: .* 2 stages \(blocks\.0-2, blocks\.3-5\)"):
        fit(classifier("cnn"), [policy(make_cfg, "transfer=partial", "transfer.freeze_depth=5")])


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        ("transfer.freeze_depth=-1", "freeze_depth=-1"),
        ("transfer.backbone_lr_mult=-0.5", "backbone_lr_mult=-0.5"),
        ("transfer.unfreeze_every=0", "unfreeze_every=0"),
    ],
)
def test_bad_knobs_are_clear_errors(make_cfg, knob, message):
    with pytest.raises(Exception, match=f"ConfigError.*{message}"):  # Hydra wraps what the callback raises
        policy(make_cfg, "transfer=gradual", knob)


def test_linear_probe_through_the_training_entry_point(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "model=cnn",
        "model.depth=2",
        "model.width=4",
        "transfer=linear_probe",
        "trainer.max_epochs=1",
        "logger=csv",
    )
    summary = train(cfg)
    assert summary["status"] == "completed" and read_summary(tmp_path / "run")["status"] == "completed"
    checkpoint = torch.load(summary["best_checkpoint"], weights_only=True)  # plain data: safe load
    assert checkpoint["hyper_parameters"]["network"]["model"]["_target_"] == "trainlab.models.cnn.CNN"
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "transfer/frozen_params" in metrics and "transfer/trainable_params" in metrics
    counts = read_summary(tmp_path / "run")["transfer"]  # summary.json: what the policy froze
    assert counts == summary["transfer"] and counts["frozen_params"] > 0 and counts["trainable_params"] > 0
    assert "pretrained" not in summary  # no weights were named: nothing loaded
