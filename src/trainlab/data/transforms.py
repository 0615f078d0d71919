"""Albumentations pipelines: the configured augmentations, then the source's normalisation.

Augmentations are train-time only; validation and test images get normalisation alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.utils import instantiate


def normalise_and_tensor(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    from albumentations.pytorch import ToTensorV2

    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def build_augmentations(transforms: Sequence[Any] | None) -> list[A.BasicTransform]:
    """Instantiate a YAML list of Albumentations transforms (dicts with `_target_`)."""
    built = []
    for index, spec in enumerate(transforms or []):
        if isinstance(spec, A.BasicTransform | A.BaseCompose):
            built.append(spec)
            continue
        target = spec.get("_target_", "<no _target_>") if hasattr(spec, "get") else spec
        try:
            built.append(instantiate(spec))
        except Exception as error:
            raise ValueError(f"augment.transforms[{index}] ({target}) could not be built: {error}") from error
    return built


def train_pipeline(augment: dict | None, mean, std) -> A.Compose:
    augmentations = build_augmentations((augment or {}).get("transforms"))
    return A.Compose([*augmentations, *normalise_and_tensor(mean, std)])


def eval_pipeline(mean, std) -> A.Compose:
    return A.Compose(normalise_and_tensor(mean, std))


class ArrayDataset(torch.utils.data.Dataset):
    """(image, label) pairs from uint8 HWC images, passed through an Albumentations pipeline."""

    def __init__(self, images: Sequence[np.ndarray], labels: np.ndarray, transform: A.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.transform(image=self.images[index])["image"]
        return image, int(self.labels[index])
