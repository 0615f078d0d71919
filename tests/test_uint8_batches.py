"""uint8 to the device, floats only there: the loaders ship uint8 images and the DataModule
normalises them where the model is. The network must see what the float32 pipeline (Albumentations'
Normalize + ToTensorV2 in the workers, up to 3e249c3) gave it, and old checkpoints must evaluate
as before. The fixtures under tests/fixtures/ were written by that code (their scripts say how)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2

from trainlab.data.datamodule import ImageDataModule
from trainlab.data.pipelines import ArrayDataset, AugmentSettings, build_augmentations, fit_size
from trainlab.data.sampler import SampleKey
from trainlab.eval import evaluate, load_checkpoint
from trainlab.utils.config import ConfigError, plain

from conftest import compose_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DIGITS = {"_target_": "trainlab.data.sources.digits"}


def float_pipeline(datamodule: ImageDataModule, train: bool) -> A.Compose:
    """The pipeline up to 3e249c3: augmentations, resize, Normalize and ToTensorV2 on the CPU."""
    source = datamodule.source
    augmentations = build_augmentations(datamodule.augment.transforms) if train else []
    return A.Compose(
        [
            *augmentations,
            *fit_size(datamodule.image_shape),
            A.Normalize(mean=tuple(source.mean), std=tuple(source.std), max_pixel_value=255.0),
            ToTensorV2(),
        ]
    )


class NetworkInputs(pl.Callback):
    """The inputs the network was called with, by stage, and the training items' keys."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.net.register_forward_pre_hook(self._record)

    def _record(self, module, args) -> None:
        self.inputs["train" if module.training else "val"].append(args[0].detach().clone())


def fit_and_capture(make_cfg, *overrides: str) -> tuple[ImageDataModule, NetworkInputs, list]:
    """One training batch and one validation batch of an MLP on the digits through a Trainer:
    the DataModule, the network's inputs, the keys of the items read (in order)."""
    from trainlab import builders

    cfg = make_cfg(
        "data=digits", "model=mlp", "model.depth=1", "model.width=8", "data.batch_size=16", *overrides
    )
    datamodule = builders.build_datamodule(cfg)
    model, _ = builders.build_model(cfg, datamodule)
    keys: list = []
    original = ArrayDataset.__getitem__
    ArrayDataset.__getitem__ = lambda self, key: keys.append(key) or original(self, key)  # type: ignore[method-assign]
    try:
        inputs = NetworkInputs()
        trainer = pl.Trainer(
            accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[inputs], default_root_dir=cfg.paths.output_dir,
        )  # fmt: skip
        trainer.fit(model, datamodule=datamodule)
    finally:
        ArrayDataset.__getitem__ = original  # type: ignore[method-assign]
    return datamodule, inputs, keys


# a pipeline that draws nothing at random but changes every image: inverts it and crops its centre,
# which the resize then stretches back to 8x8
FIXED = (
    "augment.transforms=[{_target_: albumentations.InvertImg, p: 1.0}, "
    "{_target_: albumentations.CenterCrop, height: 6, width: 6, p: 1.0}]"
)


def test_the_network_sees_the_float_pipelines_batch_for_a_fixed_pipeline(make_cfg):
    datamodule, inputs, keys = fit_and_capture(make_cfg, FIXED)
    [seen_train], [seen_val] = inputs.inputs["train"], inputs.inputs["val"]
    assert seen_train.dtype == seen_val.dtype == torch.float32
    assert next(iter(datamodule.train_dataloader()))[0].dtype == torch.uint8  # what crossed over
    train_keys = keys[:16]  # the first batch's items, in the sampler's order
    assert all(isinstance(key, SampleKey) for key in train_keys) and keys[-16:] == list(range(16))
    train_images, val_images = datamodule.splits["train"][0], datamodule.splits["val"][0]
    old_train, old_val = float_pipeline(datamodule, train=True), float_pipeline(datamodule, train=False)
    expected_train = torch.stack(
        [old_train(image=np.asarray(train_images[k.index]))["image"] for k in train_keys]
    )
    expected_val = torch.stack([old_val(image=np.asarray(val_images[i]))["image"] for i in range(16)])
    torch.testing.assert_close(seen_train, expected_train, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen_val, expected_val, rtol=0, atol=1e-6)


def test_normalise_on_cpu_ships_the_float_pipelines_batches():
    """The declared float path: the workers normalise, batches are float32, nothing is done twice."""
    augment = {"transforms": [{"_target_": "albumentations.InvertImg", "p": 1.0}], "normalise_on": "cpu"}
    datamodule = ImageDataModule(source=DIGITS, batch_size=16, augment=augment)
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.val_dataloader()))
    assert images.dtype == torch.float32
    assert [type(t).__name__ for t in datamodule.dataset("val").transform.transforms] == [
        "Resize",
        "Normalize",
        "ToTensorV2",
    ]
    old = float_pipeline(datamodule, train=False)
    expected = torch.stack(
        [old(image=np.asarray(datamodule.splits["val"][0][i]))["image"] for i in range(16)]
    )
    seen, same_labels = datamodule.on_after_batch_transfer([images, labels], 0)
    assert seen is images and same_labels is labels  # floats pass the device step unchanged
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match=r"augment.normalise_on='gpu' is not one of \['device', 'cpu'\]"):
        AugmentSettings.from_config({"normalise_on": "gpu"})


def test_random_pipelines_draw_what_they_drew_before_for_the_same_seed_epoch_and_index():
    """Every ready pipeline, on grey and RGB images: the items the float pipeline gave at
    (seed 7, epoch, index) keys, against the uint8 items of today, normalised as on the device."""
    from fixtures.make_float_pipeline_batches import SOURCES

    stored = torch.load(FIXTURES / "float_pipeline_batches.pt", weights_only=True)
    assert len(stored["batches"]) == 14
    for name, expected in stored["batches"].items():
        pipeline, source = name.split("/")
        augment = plain(compose_config([f"augment={pipeline}", "augment.seed=7"], Path("/tmp")).augment)
        datamodule = ImageDataModule(source=SOURCES[source], augment=augment)
        datamodule.setup("fit")
        dataset = datamodule.dataset("train")
        items = torch.stack([dataset[SampleKey(epoch, index)][0] for epoch, index in stored["keys"]])
        assert items.dtype == torch.uint8 and expected.dtype == torch.float32, name
        torch.testing.assert_close(datamodule.network_input(items), expected, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("study", ["classifier", "regression"])
def test_a_checkpoint_of_the_float_pipeline_evaluates_to_its_metrics(study, tmp_path):
    """Checkpoints written up to 3e249c3 rebuild today's path (uint8 batches, normalised once, on
    the device) and measure what that code measured, for the Classifier and a study's own module."""
    expected = json.loads((FIXTURES / "float_pipeline_metrics.json").read_text())[study]
    path = shutil.copy(FIXTURES / f"float_pipeline_{study}.ckpt", tmp_path / "old.ckpt")
    _, datamodule = load_checkpoint(path)
    assert "normalise_on" not in datamodule.hparams.augment  # written before the key existed
    datamodule.setup("test")
    assert next(iter(datamodule.test_dataloader()))[0].dtype == torch.uint8
    for split in ("test", "val"):
        cfg = compose_config(
            [f"ckpt_path={path}", f"split={split}", "callbacks=none", "logger=none"],
            tmp_path / f"eval-{split}",
            "eval",
            log_dir=tmp_path,
        )
        metrics = evaluate(cfg)["metrics"]
        assert set(metrics) == set(expected[split])
        for key, value in expected[split].items():
            assert metrics[key] == pytest.approx(value, abs=1e-6), (split, key)


def test_batches_are_pinned_when_the_trainer_runs_on_a_gpu_unless_told_otherwise():
    def loader(pin_memory, device: str):
        datamodule = ImageDataModule(source=DIGITS, pin_memory=pin_memory)
        datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        return datamodule.val_dataloader()

    assert loader(None, "cuda").pin_memory and not loader(None, "cpu").pin_memory
    assert not loader(False, "cuda").pin_memory and loader(True, "cpu").pin_memory
    assert not ImageDataModule(source=DIGITS).val_dataloader().pin_memory  # no trainer: not pinned
