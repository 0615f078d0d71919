"""Albumentations pipelines: the configured augmentations, on uint8 images, ending in uint8 tensors.

The `augment` config group is a plain mapping (it is stored in checkpoints as data):

    name: basic                   # for humans: preview titles, cache folder names
    mode: online                  # online: fresh augmentations every epoch; offline: see offline_cache.py
    copies: 1                     # offline: augmented copies of the training set
    seed: null                    # null: the run's seed (torch's, as set by seed_everything)
    cache_dir: data/augment_cache # offline: where the copies are stored
    normalise_on: device          # device: uint8 batches, normalised where the model is; cpu: see below
    transforms:                   # any Albumentations transform by name, with its arguments and `p`
      - {_target_: albumentations.HorizontalFlip, p: 0.5}

Training images go through `transforms` and a resize back to the source's image size (a no-op
unless a transform changed the size); validation and test images only through the resize. Every
pipeline ends in a uint8 CHW tensor: the workers never make floats, and the batches cross to the
device as uint8, where the DataModule converts them to float32 and normalises them by the source's
mean and std (trainlab.data.on_device). `normalise_on: cpu` keeps the older path for a pipeline
that needs it: Albumentations' Normalize and ToTensorV2 end the pipeline in the workers, and the
batches are float32 (four times the bytes); the network sees the same values either way.

Randomness: Albumentations 2.x draws from generators owned by each `Compose`, not from numpy's
or Python's global state, so seeding the run does not seed augmentation and DataLoader
workers forked from one process would all replay the same stream. `ArrayDataset` therefore
seeds its pipeline itself. The training loader's sampler (trainlab.data.sampler) hands it
(epoch, index) keys, and each example's augmentation is drawn from generators keyed by (seed,
epoch, index): fresh every epoch, the same whatever the number of workers, and the same in a run
resumed from a checkpoint, mid-epoch included. Read by a plain index, the dataset draws from one
stream per process instead, seeded from (seed, rank, worker id, the worker's torch seed).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.composition import BaseCompose

from trainlab.data.sampler import SampleKey
from trainlab.data.transforms import OnRGB
from trainlab.utils.config import ConfigError, plain

MODES = ("online", "offline")
NORMALISE_ON = ("device", "cpu")
# Albumentations replaces some invalid values (an even or reversed kernel range, ...) with a
# warning; in a pipeline written in YAML that is a mistake to report, not to fix silently.
FIXED_UP = ("invalid", "adjusted", "not valid")
Transform = A.BasicTransform | BaseCompose


# --- the `augment` config group ---------------------------------------------------------------


@dataclass(frozen=True)
class AugmentSettings:
    """The `augment` config group, checked. See the module docstring for each key."""

    name: str = "custom"
    transforms: tuple[Any, ...] = ()
    mode: str = "online"
    copies: int = 1
    seed: int | None = None
    cache_dir: str = "data/augment_cache"
    normalise_on: str = "device"

    @classmethod
    def from_config(cls, augment: Mapping | None) -> AugmentSettings:
        values = dict(plain(augment) or {})
        known = list(cls.__dataclass_fields__)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"augment.{unknown[0]}: unknown key; the augment group has: {', '.join(known)}."
            )
        settings = cls(**{**values, "transforms": tuple(values.get("transforms") or ())})
        if settings.mode not in MODES:
            raise ConfigError(f"augment.mode={settings.mode!r} is not one of {list(MODES)}.")
        if settings.normalise_on not in NORMALISE_ON:
            raise ConfigError(
                f"augment.normalise_on={settings.normalise_on!r} is not one of {list(NORMALISE_ON)} "
                "(device: uint8 batches, normalised on the model's device; cpu: float32 batches "
                "normalised in the DataLoader workers)."
            )
        if not isinstance(settings.copies, int) or isinstance(settings.copies, bool) or settings.copies < 1:
            raise ConfigError(f"augment.copies={settings.copies!r} must be a positive integer.")
        if settings.seed is not None and (not isinstance(settings.seed, int) or settings.seed < 0):
            raise ConfigError(
                f"augment.seed={settings.seed!r} must be null (the run's seed) or an integer >= 0."
            )
        return settings

    @property
    def offline(self) -> bool:
        """Offline mode with something to materialise (offline `none` is just `none`)."""
        return self.mode == "offline" and bool(self.transforms)


# --- building transforms from their YAML, with errors that name them -------------------------


def _locate(target: str) -> Any:
    """`package.module.Name` -> the object (Hydra's get_object also logs an error line)."""
    module_name, _, attribute = target.rpartition(".")
    if not module_name:
        raise ImportError(f"{target!r} is not a dotted path like albumentations.HorizontalFlip")
    return getattr(importlib.import_module(module_name), attribute)


def _close_names(target: str) -> str:
    module, _, name = target.rpartition(".")
    if module not in ("albumentations", "A", ""):
        return ""
    candidates = [n for n in dir(A) if n[:1].isupper()]
    matches = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    matches = matches or [n for n in candidates if len(name) >= 4 and name[:4].lower() in n.lower()][:3]
    return f" Did you mean {' or '.join('albumentations.' + m for m in matches)}?" if matches else ""


def _short(error: BaseException) -> str:
    """An exception's message without pydantic's boilerplate lines."""
    lines = [line for line in str(error).splitlines() if "errors.pydantic.dev" not in line]
    return " ".join(line.strip() for line in lines if line.strip())


def _validates_strictly(cls: type) -> bool:
    """Whether Albumentations' metaclass wrapped this class's __init__ (it then takes `strict`).

    Without `strict=True` Albumentations only *warns* about unknown arguments and, for some
    invalid values, silently falls back to the defaults: a pipeline must not do that quietly.
    """
    owner = next(c for c in cls.__mro__ if "__init__" in c.__dict__)
    return "InitSchema" in owner.__dict__


def build_transform(spec: Any, where: str) -> Transform:
    """One transform from its config (`_target_` + arguments); nested `transforms` lists too."""
    if isinstance(spec, A.BasicTransform | BaseCompose):
        return spec
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(
            f"{where}={spec!r} is not a transform: write a mapping with `_target_: albumentations.<Name>`, "
            "its arguments and `p`."
        )
    target = spec["_target_"]
    label = f"{where} ({target})"
    try:
        cls = _locate(target)
    except Exception as error:
        raise ConfigError(f"{label}: no such transform ({_short(error)}).{_close_names(target)}") from error
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform | BaseCompose)):
        raise ConfigError(f"{label} is not an Albumentations transform (BasicTransform or a composition).")
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "_target_":
            continue
        if key.startswith("_"):
            raise ConfigError(f"{label}: {key} is not supported in augmentation pipelines.")
        if key not in parameters and not takes_any:
            valid = ", ".join(n for n in parameters if n not in ("self", "strict"))
            raise ConfigError(f"{label} has no argument {key!r}; valid arguments: {valid}.")
        if key == "transforms" and issubclass(cls, BaseCompose):
            value = [
                build_transform(child, f"{where}.transforms[{j}]") for j, child in enumerate(value or [])
            ]
        kwargs[key] = value
    if _validates_strictly(cls):
        kwargs["strict"] = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**kwargs)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"{label}: bad argument: {_short(error)}") from error
    for warning in caught:
        message = str(warning.message)
        if any(word in message.lower() for word in FIXED_UP):  # Albumentations "fixed" a bad value
            raise ConfigError(f"{label}: bad argument: {message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    _check_kernel_sizes(transform, label)
    return transform


def _check_kernel_sizes(transform: Transform, label: str) -> None:
    """Blur kernels are 0 (sized from sigma) or odd. Blur, MedianBlur and MotionBlur warn about an
    even size and round it up (caught above); GaussianBlur (Albumentations 2.0.8) checks only that
    its range is non-negative and increasing, and then rounds an even size up to the next odd one
    where it draws it, with no warning at all."""
    limit = getattr(transform, "blur_limit", None)
    if not isinstance(limit, tuple | list) or not all(isinstance(v, int) for v in limit):
        return
    even = [v for v in limit if v and v % 2 == 0]
    if even:
        raise ConfigError(
            f"{label}: bad argument: blur_limit={list(limit)}: kernel sizes must be 0 or odd, got "
            f"{even[0]} (it would silently become {even[0] + 1}); write blur_limit: "
            f"[{', '.join(str(v + 1 if v and v % 2 == 0 else v) for v in limit)}] or use odd values."
        )


def build_augmentations(
    transforms: Sequence[Any] | None, where: str = "augment.transforms"
) -> list[Transform]:
    """Instantiate a YAML list of Albumentations transforms (mappings with `_target_`)."""
    return [build_transform(spec, f"{where}[{index}]") for index, spec in enumerate(transforms or [])]


def _is_grey(image: np.ndarray) -> bool:
    return image.ndim == 2 or image.shape[-1] == 1


def check_augmentations(
    transforms: Sequence[Transform], image: np.ndarray, where: str = "augment.transforms"
) -> None:
    """Apply every transform alone (forced, whatever its `p`) to a real image of the source.

    Catches what only shows on the data: a transform that needs RGB on a grey source, sizes
    that do not fit the images, a transform that changes the number of channels.
    """
    for index, transform in enumerate(transforms):
        _check_one(transform, image, f"{where}[{index}]")


def _check_one(transform: Transform, image: np.ndarray, where: str) -> None:
    name = type(transform).__name__
    if isinstance(transform, BaseCompose):
        inner = image
        if isinstance(transform, OnRGB) and _is_grey(image):
            if transform.grey == "skip":
                return
            inner = np.ascontiguousarray(np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1))
        for j, child in enumerate(transform.transforms):
            _check_one(child, inner, f"{where}.transforms[{j}]")
        return
    try:
        out = transform(image=image.copy(), force_apply=True)["image"]
    except Exception as error:
        hint = ""
        if _is_grey(image) and ("channel" in str(error).lower() or "rgb" in str(error).lower()):
            hint = (
                " It needs RGB: wrap it in `_target_: trainlab.data.transforms.OnRGB` (grey: expand) "
                "to run it on an RGB copy of the grey image."
            )
        raise ConfigError(
            f"{where} ({name}) fails on images of shape {image.shape}: {_short(error)}.{hint}"
        ) from error
    channels = 1 if out.ndim == 2 else out.shape[-1]
    if channels != image.shape[-1] or out.dtype != image.dtype:
        raise ConfigError(
            f"{where} ({name}) turns {image.shape[-1]}-channel {image.dtype} images into {channels}-channel "
            f"{out.dtype} ones; the model expects the source's. For colour transforms on grey images use "
            "`trainlab.data.transforms.OnRGB`."
        )


# --- pipelines ---------------------------------------------------------------------------------


def to_tensor(
    mean: Sequence[float], std: Sequence[float], normalise_on: str = "device"
) -> list[A.BasicTransform]:
    """The last steps of every pipeline: HWC -> CHW tensor; uint8, or with `normalise_on="cpu"`
    normalised float32 (Albumentations' Normalize first, the pre-2026-12 path)."""
    from albumentations.pytorch import ToTensorV2

    if normalise_on == "cpu":
        return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return [ToTensorV2()]


def fit_size(image_shape: Sequence[int] | None) -> list[A.BasicTransform]:
    """Resize to the source's (H, W, ...) size: a no-op unless a transform changed it."""
    if image_shape is None:
        return []
    height, width = int(image_shape[0]), int(image_shape[1])
    return [A.Resize(height, width, interpolation=cv2.INTER_LINEAR, area_for_downscale="image")]


def seeded(pipeline: A.Compose, *entropy: int) -> A.Compose:
    """Give the pipeline one numpy and one Python generator, seeded from `entropy`, shared by
    all its transforms.

    Not `Compose(seed=...)`: that seeds every transform with the *same* seed, so that e.g.
    HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) always fire together (Albumentations 2.0.8).
    """
    sequence = np.random.SeedSequence([int(e) % 2**64 for e in entropy])
    python_seed = int.from_bytes(sequence.generate_state(2, np.uint64).tobytes(), "little")
    pipeline.set_random_state(np.random.default_rng(sequence), random.Random(python_seed))
    return pipeline


def augmentation_pipeline(
    augment: Mapping | AugmentSettings | None, image_shape: Sequence[int] | None = None, seed: int = 0
) -> A.Compose:
    """uint8 -> uint8: the augmentations and the resize back to `image_shape` (previews, offline)."""
    settings = augment if isinstance(augment, AugmentSettings) else AugmentSettings.from_config(augment)
    return seeded(A.Compose([*build_augmentations(settings.transforms), *fit_size(image_shape)]), seed)


def train_pipeline(
    augment: Mapping | AugmentSettings | None,
    mean: Sequence[float],
    std: Sequence[float],
    image_shape: Sequence[int] | None = None,
) -> A.Compose:
    """The augmentations, the resize to the source's size, HWC uint8 -> CHW uint8 tensor (or the
    normalised float32 one, with `augment.normalise_on=cpu`)."""
    settings = augment if isinstance(augment, AugmentSettings) else AugmentSettings.from_config(augment)
    augmentations = build_augmentations(settings.transforms)
    return A.Compose([*augmentations, *fit_size(image_shape), *to_tensor(mean, std, settings.normalise_on)])


def eval_pipeline(
    mean: Sequence[float],
    std: Sequence[float],
    image_shape: Sequence[int] | None = None,
    normalise_on: str = "device",
) -> A.Compose:
    return A.Compose([*fit_size(image_shape), *to_tensor(mean, std, normalise_on)])


# --- datasets ----------------------------------------------------------------------------------


def _rank() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# A pipeline that draws nothing at random is applied once to the whole split when its output
# (uint8, or float32 with augment.normalise_on=cpu) takes at most this much memory; larger splits
# go through it example by example.
FIXED_OUTPUT_LIMIT_BYTES = 256 * 2**20


class ArrayDataset(torch.utils.data.Dataset):
    """(image, label) pairs from uint8 HWC images, passed through an Albumentations pipeline.

    The images come out as the pipeline's last step makes them: uint8 CHW tensors (which may
    share memory with the source's arrays: read them, don't write into them), or normalised
    float32 ones with `augment.normalise_on=cpu`.

    With a `seed`, the pipeline's random draws are seeded by the dataset (see the module's
    docstring): read with a `SampleKey` (what `EpochSampler` yields), from (seed, epoch, index);
    read with a plain index, from one stream per process, re-seeded from the seed, the DDP rank,
    the worker id and the worker's torch seed (PyTorch draws it anew every time it starts workers).

    `fixed=True` says the pipeline draws nothing at random (resize and normalisation: validation,
    test, and training without augmentation). Its outputs are then computed once, for all
    examples, when they fit in FIXED_OUTPUT_LIMIT_BYTES: Albumentations' per-call overhead
    (~30 us an image) is paid once per split, not once per example and epoch. The tensors are
    the ones the pipeline gives (tests/test_data.py compares them).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: np.ndarray,
        transform: A.Compose,
        seed: int | None = None,
        fixed: bool = False,
    ) -> None:
        self.images, self.labels, self.transform, self.seed = images, labels, transform, seed
        self._seeded_for: tuple | None = None
        self._keyed: tuple[np.random.Philox, random.Random] | None = None
        self._outputs = self._apply_once() if fixed else None

    def _apply_once(self) -> torch.Tensor | None:
        """The pipeline's output for every example, stacked; None when it would take more than
        FIXED_OUTPUT_LIMIT_BYTES (or the split is empty). Images of one size go through
        Albumentations' `images` target in one call (the same tensors as one call per image, a
        tenth of the time); images of different sizes one by one."""
        if not len(self.labels):
            return None
        first = self.transform(image=np.asarray(self.images[0]))["image"]
        if (
            not isinstance(first, torch.Tensor)
            or first.nelement() * first.element_size() * len(self.labels) > FIXED_OUTPUT_LIMIT_BYTES
        ):
            return None
        images = [np.asarray(self.images[index]) for index in range(len(self.labels))]
        if all(image.shape == images[0].shape for image in images):
            stacked = self.transform(images=np.stack(images))["images"]
            if isinstance(stacked, torch.Tensor) and stacked.shape == (len(images), *first.shape):
                return stacked.contiguous()
        return torch.stack([first, *(self.transform(image=image)["image"] for image in images[1:])])

    def __len__(self) -> int:
        return len(self.labels)

    def _seed_this_process(self) -> None:
        worker = torch.utils.data.get_worker_info()
        stream = (_rank(), worker.id + 1, worker.seed) if worker is not None else (_rank(), 0, 0)
        if stream != self._seeded_for:
            seeded(self.transform, self.seed, *stream)
            self._seeded_for, self._keyed = stream, None

    def _seed_this_example(self, epoch: int, index: int) -> None:
        """Key the pipeline's generators by (seed, epoch, index), in place: ~8 us per example
        (Philox is counter-based, so re-keying it is setting two small arrays; Python's Random
        is re-seeded), against ~30 us to build and hand new generators to every transform."""
        if self._keyed is None:
            self._keyed = (np.random.Philox(0), random.Random())
            self.transform.set_random_state(np.random.Generator(self._keyed[0]), self._keyed[1])
            self._seeded_for = None
        philox, python_random = self._keyed
        seed = int(self.seed) % 2**64
        philox.state = {
            "bit_generator": "Philox",
            "state": {
                "counter": np.array([0, 0, index, epoch], dtype=np.uint64),
                "key": np.array([seed, 0], dtype=np.uint64),
            },
            "buffer": np.zeros(4, dtype=np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        python_random.seed((seed << 96) | (epoch << 48) | index)

    def __getitem__(self, key):
        if self._outputs is not None:
            index = key.index if isinstance(key, SampleKey) else key
            return self._outputs[index], int(self.labels[index])
        if isinstance(key, SampleKey):
            if self.seed is not None:
                self._seed_this_example(key.epoch, key.index)
            key = key.index
        elif self.seed is not None:
            self._seed_this_process()
        image = np.asarray(self.images[key])
        if not image.flags.writeable:  # e.g. the memory-mapped offline copies: torch wants writable arrays
            image = image.copy()
        return self.transform(image=image)["image"], int(self.labels[key])
