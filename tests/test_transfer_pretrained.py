"""Backbone weights from a trainlab checkpoint: loaded by name and shape, reported, never reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.testing import assert_close

from trainlab import builders, checks
from trainlab.models.classifier import Classifier
from trainlab.train import train
from trainlab.transfer import LoadReport, WeightSources, load_pretrained, split_network
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


def load(model: Classifier, policy: str = "finetune", **sources) -> LoadReport | None:
    """`load_pretrained` as trainlab.builders.build_model calls it: the transfer settings, the network."""
    return load_pretrained(WeightSources(policy, **sources), model.net, model.hparams["network"])


def test_checkpoint_backbone_round_trip(tmp_path):
    source = classifier("cnn")
    path = trained_checkpoint(source, tmp_path / "source.ckpt")
    target = classifier("cnn")
    torch.manual_seed(123)  # a different head init than the source's
    torch.nn.init.normal_(target.net.head.weight)
    head_before = target.net.head.weight.detach().clone()

    report = load(target, pretrained_ckpt=str(path))

    split = split_network(target.net)
    saved = torch.load(path, weights_only=True)["state_dict"]  # plain tensors: safe load
    for key in split.backbone_keys():  # parameters and BN statistics of every stage
        assert_close(target.net.state_dict()[key], saved[f"net.{key}"])
    assert torch.equal(target.net.head.weight, head_before)  # the head is new: not loaded
    assert sorted(report.loaded) == sorted(split.backbone_keys())
    assert report.head == ["head.weight", "head.bias"] and report.unused == ["head.weight", "head.bias"]
    assert report.missing == [] and report.not_selected == []
    assert report.as_dict()["source"].startswith(str(path))  # returned; nothing set on the module
    assert not hasattr(target, "pretrained_report")
    assert "loaded 24 tensors, stages blocks.0-2, blocks.3-5 (2 of 2)" in report.text()


def test_pretrained_depth_loads_only_the_first_stages(tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    target = classifier("cnn")
    before = {k: v.clone() for k, v in target.net.state_dict().items()}
    report = load(target, pretrained_ckpt=str(path), pretrained_depth=1)
    saved = torch.load(path, weights_only=True)["state_dict"]
    stage0, stage1 = split_network(target.net).stages
    for key in stage0.keys:
        assert_close(target.net.state_dict()[key], saved[f"net.{key}"])
    for key in stage1.keys:  # beyond pretrained_depth: keeps its initialisation
        assert torch.equal(target.net.state_dict()[key], before[key])
    assert sorted(report.not_selected) == sorted(stage1.keys)
    assert "beyond transfer.pretrained_depth=1" in report.text()


def test_another_architecture_is_a_clear_error(tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    wider = classifier("cnn")
    wider_cfg = dict(wider.hparams.network, model={**wider.hparams.network["model"], "width": 6})
    wider = Classifier(network=wider_cfg, optimizer=wider.hparams.optimizer)
    with pytest.raises(ConfigError, match=r"do not fit this network .*blocks\.0\.0\.weight: \(4, 1, 3, 3\)"):
        load(wider, pretrained_ckpt=str(path))
    with pytest.raises(
        ConfigError, match=r"blocks\.0\.0\.weight: \(4, 1, 3, 3\) in the source, \(8, 64\) here"
    ):
        load(classifier("mlp"), pretrained_ckpt=str(path))  # same names, other shapes


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="transfer.pretrained_ckpt='.*nowhere.ckpt' is not a file"):
        load(classifier(), pretrained_ckpt=str(tmp_path / "nowhere.ckpt"))
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    with pytest.raises(ConfigError, match="transfer=scratch .* use transfer=finetune"):
        WeightSources("scratch", pretrained_ckpt=str(path))  # when the settings are read, before any build
    with pytest.raises(ConfigError, match="transfer.pretrained_ckpt and transfer.pretrained/.* choose one"):
        WeightSources("finetune", pretrained=True, pretrained_ckpt=str(path))
    with pytest.raises(ConfigError, match="timm's, model=timm.* MLP has none .*transfer.pretrained_ckpt"):
        load(classifier("mlp"), pretrained=True)
    with pytest.raises(ConfigError, match="transfer.pretrained_depth=7: .* 2 stages"):
        load(classifier(), pretrained_ckpt=str(path), pretrained_depth=7)


TINY_CNN = ["data=digits", "model=cnn", "model.depth=2", "model.width=4", "norm=batchnorm", "logger=csv"]


def test_nothing_is_reloaded_on_resume(make_cfg, tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    saved = torch.load(path, weights_only=True)["state_dict"]
    cfg = make_cfg(*TINY_CNN, "transfer=finetune", f"transfer.pretrained_ckpt={path}")
    datamodule = builders.build_datamodule(cfg)
    loaded = builders.build_model(cfg, datamodule)[0].net.state_dict()
    assert_close(loaded["blocks.0.0.weight"], saved["net.blocks.0.0.weight"])
    cfg.ckpt_path = str(path)  # a resumed run: its own checkpoint has the weights
    resumed = builders.build_model(cfg, datamodule)[0].net.state_dict()
    assert not torch.equal(resumed["blocks.0.0.weight"], saved["net.blocks.0.0.weight"])


def test_a_checkpoint_whose_model_config_names_weight_sources_still_loads(tmp_path):
    """Checkpoints written while the weight sources were model.pretrained*: the upgrade on reading
    drops them from the network config; the weights file they name is never read."""
    model = classifier("cnn")
    path = trained_checkpoint(model, tmp_path / "run.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["network"]["model"].update(
        pretrained_ckpt=str(tmp_path / "gone.ckpt"), pretrained_depth=1
    )
    torch.save(checkpoint, path)
    reloaded = Classifier.load_from_checkpoint(path, map_location="cpu")
    assert "pretrained_ckpt" not in reloaded.hparams.network["model"]
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
            f"transfer.pretrained_ckpt={ckpt}",
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


# --- the old names: model.pretrained* --------------------------------------------------------


def test_old_model_names_still_work_and_warn_with_the_new_name(make_cfg, tmp_path):
    path = trained_checkpoint(classifier("cnn"), tmp_path / "source.ckpt")
    cfg = make_cfg(
        *TINY_CNN, "transfer=finetune", f"model.pretrained_ckpt={path}", "model.pretrained_depth=1"
    )
    with pytest.warns(
        FutureWarning, match=r"model.pretrained_ckpt is deprecated.* use transfer.pretrained_ckpt="
    ):
        checks.check_config(cfg)
    assert (cfg.transfer.pretrained_ckpt, cfg.transfer.pretrained_depth) == (str(path), 1)
    assert not any(key.startswith("pretrained") for key in cfg.model)  # the model is the architecture
    model, _ = builders.build_model(cfg, builders.build_datamodule(cfg))
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert_close(model.net.state_dict()["blocks.0.0.weight"], saved["net.blocks.0.0.weight"])
    assert "pretrained_ckpt" not in model.hparams.network["model"]  # nor does the checkpoint name it


def test_old_and_new_name_set_differently_is_an_error(make_cfg):
    cfg = make_cfg(
        *TINY_CNN, "transfer=finetune", "model.pretrained_ckpt=a.ckpt", "transfer.pretrained_ckpt=b.ckpt"
    )
    with pytest.raises(
        ConfigError, match=r"model.pretrained_ckpt='a.ckpt' and transfer.pretrained_ckpt='b.ckpt'"
    ):
        checks.check_config(cfg)
    same = make_cfg(
        *TINY_CNN, "transfer=finetune", "model.pretrained_ckpt=a.ckpt", "transfer.pretrained_ckpt=a.ckpt"
    )
    with pytest.warns(FutureWarning, match="transfer.pretrained_ckpt"):
        checks.check_config(same)
    assert same.transfer.pretrained_ckpt == "a.ckpt"


def test_old_names_in_an_experiment_config_are_moved(tmp_path):
    """What an experiment file of one's own that still says `model: {pretrained_ckpt: ...}` composes to."""
    from omegaconf import OmegaConf

    from trainlab.transfer.aliases import move_deprecated_weight_sources

    cfg = OmegaConf.create(
        {
            "model": {
                "_target_": "trainlab.models.mlp.MLP",
                "pretrained_ckpt": "a.ckpt",
                "pretrained_depth": None,
            },
            "transfer": {"name": "partial", "pretrained_ckpt": None},
        }
    )
    OmegaConf.set_struct(cfg, True)
    with pytest.warns(FutureWarning, match="transfer.pretrained_ckpt"):
        assert move_deprecated_weight_sources(cfg) == ["pretrained_ckpt"]
    assert cfg.transfer.pretrained_ckpt == "a.ckpt" and list(cfg.model) == ["_target_"]
