"""Bad data settings fail before the first training step: classes, split sizes, image folders,
and the batches ghost batch norm must split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainlab.train import train
from trainlab.utils.config import ConfigError

from conftest import read_summary

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv", "trainer.max_epochs=1"]


def fails_before_training(make_cfg, tmp_path, error, match, *overrides):
    with pytest.raises(error, match=match):
        train(make_cfg(*TINY, *overrides))
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and summary["global_step"] == 0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        # today: [] is falsy and trains all ten classes; one class "trains" to accuracy 1.0
        ("data.classes=[]", r"data.classes=\[\] keeps no class: a classifier needs two or more"),
        ("data.classes=[3]", r"data.classes=\[3\] keeps 1 class: a classifier needs two or more"),
        ("data.classes=[1,1]", r"data.classes=\[1, 1\]: repeated \[1\]; .*distinct integers in 0..9"),
        ("data.classes=[0,10]", r"data.classes=\[0, 10\]: unknown \[10\]; .*0..9 \(digits: 0, 1"),
    ],
)
def test_classes_that_cannot_train_a_classifier(make_cfg, tmp_path, override, match):
    fails_before_training(make_cfg, tmp_path, ConfigError, match, override)


def test_train_size_below_the_number_of_classes(make_cfg, tmp_path):
    # today: sklearn's "The train_size = 3 should be greater or equal to the number of classes = 10",
    # from inside the 1..N range that the error for a too large value advertises
    fails_before_training(
        make_cfg,
        tmp_path,
        ConfigError,
        r"data.train_size=3 must be between 10 \(one example of each",
        "data.train_size=3",
    )


def test_train_size_just_below_the_pool():
    from trainlab.data.datamodule import ImageDataModule

    # 1,293 training digits: keeping 1,290 leaves out 3, too few to stratify (today sklearn's error)
    datamodule = ImageDataModule(source={"_target_": "trainlab.data.sources.digits"}, train_size=1290)
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    assert len(images) == 1290 and len(np.unique(labels)) == 10


def test_split_fraction_too_small_for_the_classes(make_cfg, tmp_path):
    fails_before_training(
        make_cfg,
        tmp_path,
        ConfigError,
        r"data.val_fraction=0.001 splits \d+ examples into 2 and \d+, but each part needs at least one "
        r"example of each of the 10 classes",
        "data.val_fraction=0.001",
    )


def write_folder(root: Path, classes: list[str], per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_folder_with_one_class(make_cfg, tmp_path):
    root = write_folder(tmp_path / "images", ["cats"], per_class=10)
    # today: trains on one class and "completes" with accuracy 1.0
    fails_before_training(
        make_cfg,
        tmp_path,
        ValueError,
        r"data.source.root='.*images' holds 1 class folder \(cats\): a classifier needs two classes",
        "data=folder",
        f"data.source.root={root}",
    )


def test_corrupt_images_are_named_at_setup(make_cfg, tmp_path):
    from trainlab.data.sources import unreadable_images

    root = write_folder(tmp_path / "images", ["a", "b"], per_class=6)
    (root / "b" / "3.png").write_bytes(b"not an image at all")
    good = (root / "a" / "2.png").read_bytes()
    (root / "a" / "2.png").write_bytes(good[: len(good) // 2])  # truncated: a header, half the data
    assert [p.name for p, _ in unreadable_images(sorted(root.rglob("*.png")))] == ["2.png", "3.png"]
    fails_before_training(
        make_cfg,
        tmp_path,
        ValueError,
        r"data=folder: 2 of the 12 image files under data.source.root='.*images' cannot be read: "
        r".*a/2.png \(.*\); .*b/3.png \(UnidentifiedImageError.*Remove or replace them",
        "data=folder",
        f"data.source.root={root}",
        "data.source.image_size=8",
    )


def test_ghost_batchnorm_last_batch_is_checked_before_training(make_cfg, tmp_path):
    # 1000 training examples in batches of 64: the last batch has 40, not a multiple of 16;
    # today the run fails at the end of epoch 0, after 15 steps
    fails_before_training(
        make_cfg,
        tmp_path,
        ConfigError,
        r"norm.virtual_batch_size=16 does not divide the training batches of 40 examples \(1000 training "
        r"examples in batches of data.batch_size=64, data.drop_last=false\).*data.drop_last=true",
        "norm=ghost_batchnorm",
        "data.train_size=1000",
        "data.batch_size=64",
    )


def test_ghost_batch_check_accepts_what_splits():
    from trainlab.norm.ghost_batchnorm import check_virtual_batches

    check_virtual_batches(16, 1000, 64, drop_last=True)  # the 40 are dropped
    check_virtual_batches(8, 1000, 64, drop_last=False)  # 40 = 5 x 8
    check_virtual_batches(16, 32, 64, drop_last=False)  # one batch of 32
    with pytest.raises(ConfigError, match="training batches of 40, 64 examples"):
        check_virtual_batches(48, 1000, 64, drop_last=False)
