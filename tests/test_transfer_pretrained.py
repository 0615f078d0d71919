"""Backbone weights from a trainlab checkpoint: loaded by name and shape, reported, never reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.testing import assert_close

from trainlab.models.classifier import Classifier
from trainlab.train import train
from trainlab.transfer import load_pretrained, split_network
from trainlab.utils.config import ConfigError

from test_transfer_policies import classifier, loader


def trained_checkpoint(model: Classifier, path: Path) -> Path:
    """A real Lightning checkpoint of `model` after a few SGD steps."""
    trainer = Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=loader())
    trainer.save_checkpoint(path)
    return path


def cfg_with(**model_keys) -> dict:
    return {"model": dict(model_keys), "transfer": {"name": "finetune"}, "ckpt_path": None}


def test_checkpoint_backbone_round_trip(tmp_path):
    source = classifier("cnn")
    path = trained_checkpoint(source, tmp_path / "source.ckpt")
    target = classifier("cnn")
    torch.manual_seed(123)  # a different head init than the source's
    torch.nn.init.normal_(target.net.head.weight)
    head_before = target.net.head.weight.detach().clone()

    report = load_pretrained(target, cfg_with(pretrained_ckpt=str(path)))

    split = split_network(target.net)
    saved = torch.load(path, weights_only=True)["state_dict"]  # plain tensors: safe load
    for key in split.backbone_keys():  # parameters and BN statistics of every stage
        assert_close(target.net.state_dict()[key], saved[f"net.{key}"])
    assert torch.equal(target.net.head.weight, head_before)  # the head is new: not loaded
    assert sorted(report.loaded) == sorted(split.backbone_keys())
    assert report.head == ["head.weight", "head.bias"] and report.unused == ["head.weight", "head.bias"]
    assert report.missing == [] and report.not_selected == []
    assert target.pretrained_report["source"].startswith(str(path))
    assert "loaded 24 tensors, stages blocks.0-2, blocks.3-5 (2 of 2)" in report.text()


def test_pretrained_depth_loads_only_the_first_stages(tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    target = classifier("cnn")
    before = {k: v.clone() for k, v in target.net.state_dict().items()}
    report = load_pretrained(target, cfg_with(pretrained_ckpt=str(path), pretrained_depth=1))
    saved = torch.load(path, weights_only=True)["state_dict"]
    stage0, stage1 = split_network(target.net).stages
    for key in stage0.keys:
        assert_close(target.net.state_dict()[key], saved[f"net.{key}"])
    for key in stage1.keys:  # beyond pretrained_depth: keeps its initialisation
        assert torch.equal(target.net.state_dict()[key], before[key])
    assert sorted(report.not_selected) == sorted(stage1.keys)
    assert "beyond model.pretrained_depth=1" in report.text()


def test_another_architecture_is_a_clear_error(tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    wider = classifier("cnn")
    wider_cfg = dict(wider.hparams.network, model={**wider.hparams.network["model"], "width": 6})
    wider = Classifier(network=wider_cfg, optimizer=wider.hparams.optimizer)
    with pytest.raises(ConfigError, match=r"do not fit this network .*blocks\.0\.0\.weight: \(4, 1, 3, 3\)"):
        load_pretrained(wider, cfg_with(pretrained_ckpt=str(path)))
    with pytest.raises(
        ConfigError, match=r"blocks\.0\.0\.weight: \(4, 1, 3, 3\) in the source, \(8, 64\) here"
    ):
        load_pretrained(classifier("mlp"), cfg_with(pretrained_ckpt=str(path)))  # same names, other shapes


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.pretrained_ckpt='.*nowhere.ckpt' is not a file"):
        load_pretrained(classifier(), cfg_with(pretrained_ckpt=str(tmp_path / "nowhere.ckpt")))
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    scratch = {**cfg_with(pretrained_ckpt=str(path)), "transfer": {"name": "scratch"}}
    with pytest.raises(ConfigError, match="transfer=scratch .* use transfer=finetune"):
        load_pretrained(classifier(), scratch)
    with pytest.raises(ConfigError, match="need model=timm"):
        load_pretrained(classifier(), cfg_with(pretrained=True))
    with pytest.raises(ConfigError, match="model.pretrained_depth=7: .* 2 stages"):
        load_pretrained(classifier(), cfg_with(pretrained_ckpt=str(path), pretrained_depth=7))


def test_nothing_is_reloaded_on_resume_or_from_a_checkpoint(tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    target = classifier("cnn")
    before = {k: v.clone() for k, v in target.net.state_dict().items()}
    resumed = {**cfg_with(pretrained_ckpt=str(path)), "ckpt_path": "last"}
    assert load_pretrained(target, resumed) is None  # the run's own checkpoint has the weights
    assert all(torch.equal(before[k], v) for k, v in target.net.state_dict().items())
    # a checkpoint whose config names a weights file that is gone still loads: no reload
    network = dict(
        target.hparams.network, model={**target.hparams.network["model"], "pretrained_ckpt": str(path)}
    )
    model = Classifier(network=network, optimizer=target.hparams.optimizer)
    trained_checkpoint(model, tmp_path / "run.ckpt")
    path.unlink()
    reloaded = Classifier.load_from_checkpoint(tmp_path / "run.ckpt", map_location="cpu")
    assert reloaded.hparams.network["model"]["pretrained_ckpt"] == str(path)
    for key, value in model.net.state_dict().items():
        assert_close(reloaded.net.state_dict()[key], value)


@pytest.mark.slow
def test_source_run_feeds_a_linear_probe_through_the_entry_point(make_cfg, tmp_path):
    tiny = [
        "data=digits",
        "model=cnn",
        "model.depth=2",
        "model.width=4",
        "logger=csv",
        "trainer.max_epochs=1",
    ]
    source = train(make_cfg(*tiny, "data.classes=[0,1,2,3,4]", run="source"))
    assert source["status"] == "completed"
    ckpt = source["best_checkpoint"]
    target = train(
        make_cfg(
            *tiny,
            "data.classes=[5,6,7,8,9]",
            "transfer=linear_probe",
            f"++model.pretrained_ckpt={ckpt}",
            "seed=7",
            run="target",
        )
    )
    assert target["status"] == "completed", target["error"]
    source_state = torch.load(ckpt, weights_only=True)["state_dict"]
    target_state = torch.load(target["best_checkpoint"], weights_only=True)["state_dict"]
    backbone = [k for k in source_state if k.startswith("net.blocks.")]
    for key in backbone:  # loaded, then frozen (BN statistics included) for the whole run
        assert_close(target_state[key], source_state[key])
    assert not torch.equal(target_state["net.head.weight"], source_state["net.head.weight"])
    # summary.json: the weights loaded (the build's report) and the parameters the policy froze
    assert target["pretrained"]["source"].startswith(ckpt) and target["pretrained"]["loaded"]
    assert target["transfer"]["frozen_params"] > 0 and target["transfer"]["trainable_params"] > 0
