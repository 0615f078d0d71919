"""Augmentation pipelines: shapes and ranges on every source, seeding, offline cache, errors, callback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from torch.utils.data import DataLoader

from trainlab.callbacks.augment_preview import AugmentPreview
from trainlab.data.datamodule import ImageDataModule
from trainlab.data.pipelines import ArrayDataset, seeded, train_pipeline
from trainlab.data.sources import ImageSource, digits, folder, mnist5k
from trainlab.data.transforms import OnRGB, PadAndRandomCrop
from trainlab.train import train
from trainlab.utils.config import ConfigError, plain

from conftest import CONFIG_DIR, read_summary

PIPELINES = sorted(p.stem for p in (CONFIG_DIR / "augment").glob("*.yaml"))
SOURCES = ("digits", "mnist5k", "rgb")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, ImageSource]:
    """The embedded sources, loaded once, and a small colour folder (16x16 RGB noise)."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return {"digits": digits(), "mnist5k": mnist5k(), "rgb": folder(str(root), image_size=16, channels=3)}


def make_datamodule(source: ImageSource, augment: dict, **kwargs) -> ImageDataModule:
    """A DataModule over an already loaded source (loading mnist5k once per test module)."""
    dm = ImageDataModule(source={"_target_": "trainlab.data.sources.digits"}, augment=augment, **kwargs)
    dm.source = source
    dm.setup("fit")
    return dm


def augment_config(make_cfg, name: str, *overrides: str) -> dict:
    return plain(make_cfg(f"augment={name}", *overrides).augment)


def bounds(source: ImageSource) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel values of pixel 0 and 255 after normalisation, shaped (C, 1, 1)."""
    mean, std = torch.tensor(source.mean).view(-1, 1, 1), torch.tensor(source.std).view(-1, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


@pytest.mark.parametrize("source_name", SOURCES)
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_pipeline_gives_uint8_tensors_that_the_network_gets_normalised(
    make_cfg, sources, pipeline, source_name
):
    source = sources[source_name]
    dm = make_datamodule(source, augment_config(make_cfg, pipeline))
    train_set, val_set = dm.dataset("train"), dm.dataset("val")
    count = min(64, len(train_set))
    batch = torch.stack([train_set[i][0] for i in range(count)])
    channels, height, width = source.input_shape
    assert batch.shape == (count, channels, height, width) and batch.dtype == torch.uint8
    network_input = dm.network_input(batch)
    low, high = bounds(source)
    assert network_input.dtype == torch.float32 and torch.isfinite(network_input).all()
    assert (network_input >= low - 1e-5).all() and (network_input <= high + 1e-5).all()
    assert isinstance(train_set[0][1], int)
    # validation and test images are only resized (a no-op here); normalised on the device
    assert [type(t).__name__ for t in val_set.transform.transforms] == ["Resize", "ToTensorV2"]
    if pipeline != "none":  # the pipeline does something to at least one image
        clean = torch.stack(
            [val_set.transform(image=np.asarray(train_set.images[i]))["image"] for i in range(count)]
        )
        assert not torch.equal(batch, clean)


def test_none_is_normalisation_only(make_cfg, sources):
    source = sources["mnist5k"]
    dm = make_datamodule(source, augment_config(make_cfg, "none"))
    train_set, val_set = dm.dataset("train"), dm.dataset("val")
    mean, std = torch.tensor(source.mean).view(-1, 1, 1), torch.tensor(source.std).view(-1, 1, 1)
    for i in range(0, len(train_set), 97):
        image = np.asarray(train_set.images[i])
        x = train_set[i][0]
        expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 - mean) / std
        assert torch.equal(x, val_set.transform(image=image)["image"])  # exactly the eval pipeline
        assert torch.equal(x, torch.from_numpy(image).permute(2, 0, 1))  # the image itself
        torch.testing.assert_close(dm.network_input(x), expected, rtol=0, atol=1e-6)


def first_batches(dm: ImageDataModule, workers: int, seed: int, epochs: int = 2) -> list[torch.Tensor]:
    """The first batch of each epoch, images in a fixed order (no shuffling), as a run seeded
    with `seed` sees them (train.py seeds before the training set is built)."""
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = dm.dataset("train")
    loader = DataLoader(
        dataset, batch_size=16, shuffle=False, num_workers=workers, persistent_workers=workers > 0
    )
    return [next(iter(loader))[0] for _ in range(epochs)]


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_fresh_each_epoch(make_cfg, sources, workers):
    dm = make_datamodule(sources["digits"], augment_config(make_cfg, "geometric"))
    first = first_batches(dm, workers, seed=3)
    again = first_batches(dm, workers, seed=3)
    other = first_batches(dm, workers, seed=4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # same seed, same batches
    assert not torch.equal(first[0], first[1])  # same images, fresh augmentation each epoch
    assert not torch.equal(first[0], other[0])  # another seed, other augmentations


def test_workers_draw_independent_augmentations(make_cfg, sources):
    """Forked workers copy the pipeline's generators: without re-seeding they would repeat each other."""
    image = np.asarray(sources["mnist5k"].train_images[0])
    augment = augment_config(make_cfg, "geometric")
    dataset = ArrayDataset(
        [image] * 8, np.zeros(8, dtype=np.int64), train_pipeline(augment, (0.5,), (0.5,), image.shape), seed=1
    )
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=2)  # batch i comes from worker i
    worker0, worker1 = list(loader)
    assert not torch.equal(worker0[0], worker1[0])


def test_transforms_of_one_pipeline_draw_independently():
    """`seeded` shares one generator; Compose(seed=...) gives each transform the same stream."""
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    pipeline = seeded(A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]), 137)
    flips = {"none": image, "h": image[:, ::-1], "v": image[::-1], "both": image[::-1, ::-1]}
    seen = set()
    for _ in range(64):
        out = pipeline(image=image)["image"]
        seen |= {name for name, flipped in flips.items() if np.array_equal(out, flipped)}
    assert seen == {"none", "h", "v", "both"}


def test_offline_cache_is_written_once_and_reused(make_cfg, sources, tmp_path, monkeypatch):
    source = sources["digits"]
    augment = augment_config(make_cfg, "basic", "augment.mode=offline", "augment.copies=2", "augment.seed=5")
    augment["cache_dir"] = str(tmp_path / "cache")
    dm = make_datamodule(source, augment, train_size=100)
    train_set = dm.dataset("train")
    assert len(train_set) == 3 * 100  # the originals, then 2 augmented copies
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("basic-")
    cached = np.load(folder / "images.npy")
    assert cached.shape == (200, 8, 8, 1) and cached.dtype == np.uint8
    assert np.load(folder / "labels.npy").tolist() == dm.splits["train"][1].tolist() * 2
    originals = np.stack([np.asarray(dm.splits["train"][0][i]) for i in range(100)])
    assert not np.array_equal(cached[:100], originals) and not np.array_equal(cached[:100], cached[100:])
    # training items: originals and copies, never augmented again
    val_transform = dm.dataset("val").transform
    assert torch.equal(train_set[0][0], val_transform(image=originals[0])["image"])
    assert torch.equal(train_set[150][0], val_transform(image=cached[50])["image"])
    assert torch.equal(train_set[150][0], train_set[150][0])
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # the same DataModule asked again (prepare_data, then each loader) reads the cache once
    from trainlab.data import offline_cache

    reads = []
    materialise = offline_cache.materialise
    monkeypatch.setattr(offline_cache, "materialise", lambda *a, **k: reads.append(1) or materialise(*a, **k))
    assert torch.equal(dm.dataset("train")[150][0], train_set[150][0]) and reads == []

    again = make_datamodule(source, augment, train_size=100).dataset("train")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written  # reused, not rewritten
    assert torch.equal(again[150][0], train_set[150][0])

    make_datamodule(source, {**augment, "seed": 6}, train_size=100).dataset("train")
    assert len(list((tmp_path / "cache").iterdir())) == 2  # another seed, another cache


def test_offline_run_and_preview_callback(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "model=mlp",
        "augment=noise",
        "augment.mode=offline",
        "augment.copies=1",
        f"paths.data_dir={tmp_path / 'data'}",
        "callbacks=augment_preview",
        "logger=csv",
        "+trainer.fast_dev_run=true",
        "test=false",
        quiet=False,
    )
    summary = train(cfg)
    assert summary["status"] == "completed"
    assert len(list((tmp_path / "data" / "augment_cache").glob("noise-*/images.npy"))) == 1
    with Image.open(tmp_path / "run" / "augment_preview.png") as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.width > 64 * 8


def test_preview_callback_logs_the_grid_to_wandb(make_cfg, sources, tmp_path):
    dm = make_datamodule(sources["digits"], augment_config(make_cfg, "strong"))
    logger = WandbLogger(offline=True, save_dir=str(tmp_path))  # never started: log_image is replaced
    logged = []
    logger.log_image = lambda key, images, **kwargs: logged.append((key, images, kwargs))
    trainer = SimpleNamespace(
        is_global_zero=True, datamodule=dm, default_root_dir=str(tmp_path), loggers=[logger]
    )
    callback = AugmentPreview(rows=3, copies=2)
    callback.on_fit_start(trainer, None)
    (key, images, kwargs), *_ = logged
    assert key == "augment/preview" and "augment=strong" in kwargs["caption"][0]
    assert callback.path == tmp_path / "augment_preview.png"
    with Image.open(callback.path) as png:
        assert np.array_equal(np.asarray(png), images[0])

    none = make_datamodule(sources["digits"], augment_config(make_cfg, "none"))
    AugmentPreview(filename="none.png").on_fit_start(
        SimpleNamespace(**{**vars(trainer), "datamodule": none}), None
    )
    assert not (tmp_path / "none.png").exists()  # nothing to show


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` moved by (dy, dx) pixels, the uncovered border zero."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@pytest.mark.parametrize(("size", "pad"), [(8, 1), (28, 4), (32, 4)])
def test_pad_and_random_crop_shifts_by_a_fraction_of_the_side(size, pad):
    image = np.random.default_rng(0).integers(1, 256, (size, size, 1), dtype=np.uint8)
    pipeline = seeded(A.Compose([PadAndRandomCrop(padding=0.125)]), 0)
    shifts = {(dy, dx): shifted(image, dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}
    seen = set()
    for _ in range(40 * len(shifts)):
        out = pipeline(image=image)["image"]
        (match,) = [s for s, expected in shifts.items() if np.array_equal(out, expected)]
        seen.add(match)
    assert seen == set(shifts)  # every shift in [-pad, pad]^2, and nothing else


def test_on_rgb_runs_colour_transforms_on_grey_images():
    grey = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    colour = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    flip = A.Compose([OnRGB([A.HorizontalFlip(p=1.0)])])
    assert np.array_equal(flip(image=grey)["image"], grey[:, ::-1])  # grey -> RGB -> grey is exact
    fog = A.Compose([OnRGB([A.RandomFog(fog_coef_range=(0.5, 0.5), p=1.0)], grey="expand")])
    fogged = fog(image=grey)["image"]
    assert fogged.shape == grey.shape and fogged.dtype == np.uint8 and not np.array_equal(fogged, grey)
    hue = A.Compose([OnRGB([A.HueSaturationValue(hue_shift_limit=(40, 40), p=1.0)], grey="skip")])
    assert np.array_equal(hue(image=grey)["image"], grey)  # skipped: a grey pixel has no hue
    shifted_hue = hue(image=colour)["image"]
    assert shifted_hue.shape == colour.shape and not np.array_equal(shifted_hue, colour)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"_target_": "albumentations.Flipp", "p": 0.5},
            r"augment.transforms\[1\] \(albumentations.Flipp\): no such transform.*Did you mean albumentations.HorizontalFlip",
        ),
        (
            {"_target_": "albumentations.GaussNoise", "std": 0.1},
            r"augment.transforms\[1\] \(albumentations.GaussNoise\) has no argument 'std'; valid arguments: std_range",
        ),
        (
            {"_target_": "albumentations.GaussNoise", "std_range": [0.5, 0.1]},
            r"augment.transforms\[1\] \(albumentations.GaussNoise\): bad argument: .*std_range",
        ),
        (
            {"_target_": "albumentations.HorizontalFlip", "p": 2},
            r"augment.transforms\[1\] \(albumentations.HorizontalFlip\): bad argument: .*p.*less than or equal to 1",
        ),
        (
            {
                "_target_": "albumentations.OneOf",
                "transforms": [{"_target_": "albumentations.Blur", "blur_limit": [4, 2]}],
            },
            r"augment.transforms\[1\].transforms\[0\] \(albumentations.Blur\): bad argument: blur_limit",
        ),
        (
            {"_target_": "albumentations.RandomFog", "p": 0.2},
            r"augment.transforms\[1\] \(RandomFog\) fails on images of shape \(8, 8, 1\).*trainlab.data.transforms.OnRGB",
        ),
        (
            {"_target_": "albumentations.ToRGB", "p": 1.0},
            r"augment.transforms\[1\] \(ToRGB\) turns 1-channel uint8 images into 3-channel",
        ),
        (
            {"_target_": "torch.nn.ReLU"},
            r"augment.transforms\[1\] \(torch.nn.ReLU\) is not an Albumentations transform",
        ),
    ],
)
def test_bad_transforms_are_named(sources, spec, expected):
    augment = {"transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}, spec]}
    with pytest.raises(ConfigError, match=expected):
        make_datamodule(sources["digits"], augment)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["augment.mode=sometimes"], r"augment.mode='sometimes' is not one of \['online', 'offline'\]"),
        (["augment.copies=0"], r"augment.copies=0 must be a positive integer"),
        (
            ["augment.transforms=[{_target_:albumentations.Flipp,p:0.5}]"],
            r"augment.transforms\[0\] \(albumentations.Flipp\): no such transform.*Did you mean albumentations.HorizontalFlip",
        ),
        (
            ["augment.transforms=[{_target_:albumentations.GaussNoise,std_range:[0.5,0.1]}]"],
            r"augment.transforms\[0\] \(albumentations.GaussNoise\): bad argument",
        ),
    ],
)
def test_bad_pipelines_fail_before_training(make_cfg, tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        train(make_cfg("data=digits", "model=mlp", "augment=basic", *overrides))
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and summary["global_step"] == 0


@pytest.mark.slow
def test_preview_reaches_wandb_in_a_real_run(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "model=mlp",
        "augment=geometric",
        "callbacks=augment_preview",
        "logger=wandb",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "test=false",
        quiet=False,
    )
    assert train(cfg)["status"] == "completed"
    run_dir = Path(tmp_path / "run")
    assert (run_dir / "augment_preview.png").is_file()
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/augment/preview_*.png"))
