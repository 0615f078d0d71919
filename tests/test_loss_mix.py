"""The loss axis (conf/loss: label smoothing) and the mix axis (conf/mix: Mixup, CutMix on
training batches only)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from trainlab.models.classifier import Classifier
from trainlab.models.mixing import BatchMix
from trainlab.train import train

TINY_MLP = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv"]


def classifier(make_cfg, *overrides: str) -> Classifier:
    """The Classifier a run of the tiny MLP with these overrides would train."""
    from hydra.utils import instantiate

    from trainlab.builders import build_model

    cfg = make_cfg(*TINY_MLP, *overrides)
    return build_model(cfg, instantiate(cfg.data, _recursive_=False))[0]


def test_label_smoothing_is_torchs_formula(make_cfg):
    model = classifier(make_cfg, "loss.label_smoothing=0.2")
    assert model.hparams.loss["label_smoothing"] == 0.2  # a checkpoint rebuilds it
    logits, labels = torch.randn(6, 10), torch.tensor([0, 1, 2, 3, 4, 9])
    eps, log_p = 0.2, logits.log_softmax(dim=1)
    # the smoothed target: 1 - eps on the true class, eps / num_classes on every class
    by_hand = -((1 - eps) * log_p.gather(1, labels[:, None]).squeeze(1) + eps * log_p.mean(dim=1)).mean()
    smoothed = float(model.criterion(logits, labels))
    assert smoothed == pytest.approx(float(by_hand), rel=1e-6)
    assert smoothed == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.2)), rel=1e-6)
    assert smoothed != pytest.approx(float(F.cross_entropy(logits, labels)))
    # soft targets (from mixing) go through the same loss
    soft = F.one_hot(labels, 10).float()
    assert float(model.criterion(logits, soft)) == pytest.approx(smoothed, rel=1e-6)
    # the default: plain cross-entropy
    assert float(classifier(make_cfg).criterion(logits, labels)) == pytest.approx(
        float(F.cross_entropy(logits, labels)), rel=1e-6
    )


@pytest.mark.parametrize("option", ["mixup", "cutmix"])
def test_batch_mix_mixes_images_and_targets_and_leaves_odd_batches(make_cfg, option):
    from trainlab.utils.config import plain

    mix = plain(make_cfg(f"mix={option}").mix)
    mixer = BatchMix(num_classes=3, **{k: v for k, v in mix.items() if k != "_target_"})
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])  # pairs of two classes
    original = images.clone()
    mixed, targets = mixer(images, labels)
    assert torch.equal(images, original)  # the loader's batch is not changed in place
    assert not torch.equal(mixed, original) and targets.shape == (4, 3)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))
    assert (targets.max(dim=1).values < 1).all()  # each example mixes its label with its partner's
    odd_images, odd_labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    assert mixer(odd_images, odd_labels) == (odd_images, odd_labels)


class RecordBatches(pl.Callback):
    """What the network received at each training and validation step."""

    def __init__(self) -> None:
        self.train: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def setup(self, trainer, pl_module, stage) -> None:
        pl_module.net.register_forward_pre_hook(self._record(pl_module))

    def _record(self, pl_module):
        def hook(module, args):
            (self.train if pl_module.training else self.val).append(args[0].detach().clone())

        return hook

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.loaded = batch[0].clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train[-1] = (self.loaded, self.train[-1])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_loaded = batch[0].clone()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.val[-1] = (self.val_loaded, self.val[-1])


@pytest.mark.slow
@pytest.mark.parametrize("option", ["mixup", "cutmix"])
def test_a_run_mixes_training_batches_only_and_trains(make_cfg, tmp_path, monkeypatch, option):
    import trainlab.builders as builders

    recorder = RecordBatches()
    original = builders.build_callbacks
    monkeypatch.setattr(
        builders, "build_callbacks", lambda cfg, has_logger: [*original(cfg, has_logger), recorder]
    )
    summary = train(
        make_cfg(
            *TINY_MLP,
            f"mix={option}",
            "data.batch_size=32",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3",
            "+trainer.limit_val_batches=2",
            "loss.label_smoothing=0.1",
            "test=false",
        )
    )
    assert summary["status"] == "completed"
    # the checkpoint rebuilds the same loss and mixing
    rebuilt = Classifier.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert rebuilt.hparams.mix["_target_"] == "trainlab.models.mixing.BatchMix"
    assert rebuilt.criterion.label_smoothing == 0.1 and rebuilt.mix.num_classes == 10
    assert math.isfinite(summary["metrics"]["train/loss"]) and math.isfinite(summary["metrics"]["val/loss"])
    assert 0.0 <= summary["metrics"]["train/acc"] <= 1.0
    assert len(recorder.train) == 3 and len(recorder.val) >= 2
    # mixed (not every batch: with lambda near 1 a CutMix box on 8x8 digits is a pixel or two,
    # often of the blank border both images share)
    assert any(not torch.equal(loaded, seen) for loaded, seen in recorder.train)
    assert all(torch.equal(loaded, seen) for loaded, seen in recorder.val)  # untouched


def test_loss_and_mix_settings_are_checked_before_training(make_cfg):
    from trainlab.checks import check_config
    from trainlab.utils.config import ConfigError

    with pytest.raises(ConfigError, match="loss.*label_smothing"):
        check_config(make_cfg(*TINY_MLP, "+loss.label_smothing=0.1"))
    with pytest.raises(ConfigError, match="mix=none"):
        check_config(make_cfg("experiment=noise_as_l2", "mix=mixup"))
