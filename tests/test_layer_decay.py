"""Layer-wise learning-rate decay (`transfer.layer_decay`): each layer's group starts at
optimizer.lr * layer_decay ** (depth from the top), the LR monitor logs it under the layer's name,
the schedule scales every group, and it combines with backbone_lr_mult and frozen stages."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from trainlab.models.classifier import Classifier
from trainlab.utils.config import plain

from conftest import StepLogger
from test_transfer_policies import BATCHNORM, RELU, classifier, optimizer_at_start, policy

ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01, "weight_decay": 0.05}


def timm_classifier(scheduler: dict | None) -> Classifier:
    torch.manual_seed(0)
    network = {
        "model": {"_target_": "trainlab.models.timm_backbone.timm_network", "name": "test_resnet"},
        "norm": BATCHNORM,
        "activation": RELU,
        "input_shape": [1, 16, 16],
        "num_classes": 3,
    }
    return Classifier(network=network, optimizer=ADAMW, scheduler=scheduler)


def test_timm_layers_start_at_lr_times_decay_to_the_depth_and_are_logged(make_cfg):
    cfg = make_cfg("transfer=finetune", "transfer.layer_decay=0.5")
    model = timm_classifier(plain(cfg.scheduler))  # cosine
    logger = StepLogger()
    monitor = instantiate(cfg.callbacks.lr_monitor)  # the run's own LR monitor (conf/callbacks)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=logger,
        callbacks=[instantiate(cfg.transfer), monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(8, 1, 16, 16, generator=generator), torch.randint(0, 3, (8,)))
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=4))
    # timm's layers of test_resnet, top down: fc (the head), layer4 .. layer1, the stem
    expected = {
        "lr-AdamW/head": 0.01,
        "lr-AdamW/layer4": 0.01 * 0.5,
        "lr-AdamW/layer3": 0.01 * 0.5**2,
        "lr-AdamW/layer2": 0.01 * 0.5**3,
        "lr-AdamW/layer1": 0.01 * 0.5**4,
        "lr-AdamW/conv1+bn1": 0.01 * 0.5**5,
    }
    first = {k: v for step, m in logger.records if step == 0 for k, v in m.items() if k.startswith("lr-")}
    assert first == pytest.approx(expected)
    # the cosine schedule scales every group's own rate: at the second epoch (step 2 of 4) all are
    # at half their starting value
    second = {k: v for step, m in logger.records if step == 2 for k, v in m.items() if k.startswith("lr-")}
    assert second == pytest.approx({k: v * 0.5 for k, v in expected.items()})
    # weight decay stays the optimizer's for every parameter (timm's 1-D exclusion is not applied)
    optimizer = trainer.optimizers[0]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.05}
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())


def test_trainlab_networks_decay_by_stage_times_backbone_lr_mult(make_cfg):
    # mlp of depth 3: stages blocks.0, blocks.1, blocks.2, then the head; the first stage frozen
    net = classifier("mlp", optimizer={**ADAMW, "weight_decay": 0.0})
    found = optimizer_at_start(
        make_cfg,
        net,
        "transfer=partial",
        "transfer.freeze_depth=1",
        "transfer.layer_decay=0.5",
        "transfer.backbone_lr_mult=0.1",
    )
    rates = {g["name"]: g["lr"] for g in found["groups"]}
    # blocks.0 is frozen for good: out of the optimizer, and the layers above keep their depth
    assert rates == pytest.approx({"blocks.1": 0.01 * 0.1 * 0.25, "blocks.2": 0.01 * 0.1 * 0.5, "head": 0.01})
    # gradual unfreezing: the stages it will open are in their groups from the start
    found = optimizer_at_start(make_cfg, classifier("mlp"), "transfer=gradual", "transfer.layer_decay=0.5")
    rates = {g["name"]: g["lr"] for g in found["groups"]}
    assert rates == pytest.approx(
        {"blocks.0": 0.1 / 8, "blocks.1": 0.1 / 4, "blocks.2": 0.1 / 2, "head": 0.1}
    )


def test_layer_decay_of_one_keeps_every_rate(make_cfg):
    found = optimizer_at_start(make_cfg, classifier("cnn"), "transfer=finetune", "transfer.layer_decay=1")
    assert [(g["name"], g["lr"]) for g in found["groups"]] == [
        ("blocks.0-2", pytest.approx(0.1)),
        ("blocks.3-5", pytest.approx(0.1)),
        ("head", pytest.approx(0.1)),
    ]


@pytest.mark.parametrize(
    ("value", "shown"), [("0", "0"), ("-0.5", "-0.5"), ("1.5", "1.5"), ("true", "True"), ("nan", "nan")]
)
def test_a_factor_outside_zero_to_one_is_a_clear_error(make_cfg, value, shown):
    # Hydra wraps what the callback raises
    with pytest.raises(
        Exception, match=rf"ConfigError.*transfer\.layer_decay={shown}: give a factor in \(0, 1\]"
    ):
        policy(make_cfg, "transfer=finetune", f"transfer.layer_decay={value}")
