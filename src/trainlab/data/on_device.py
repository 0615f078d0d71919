"""The end of the data path, where the model is: uint8 images become normalised float32.

The loaders hand over uint8 CHW batches: a quarter of float32's bytes through the workers' shared
memory, the pinned copy and the bus to a GPU. The conversion to float and the normalisation by the
source's mean and std then run once per batch on the model's device, in the DataModule's
`on_after_batch_transfer` (Lightning calls it for every module, the Classifier and a study's own
alike), as timm's PrefetchLoader does (timm/data/loader.py). The arithmetic is Albumentations'
`Normalize` (x - 255 mean) * 1 / (255 std) in float32, so that the network sees the batch the CPU
pipeline gave when it normalised there (tests/test_uint8_batches.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch


class Normalise:
    """uint8 images (N, C, H, W) or (C, H, W) -> float32 (x - 255 mean) / (255 std), per channel.

    Float images pass unchanged: they are normalised already (a pipeline with
    `augment.normalise_on=cpu`, or a loader of your own).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.shift = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) * 255.0
        self.scale = torch.reciprocal(torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) * 255.0)
        # the constants on each device they were used on: copied there once, not every batch
        # (a copy from pageable host memory would wait for the GPU)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self.shift.to(device), self.scale.to(device))
        return self._on[device]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        shift, scale = self._constants(images.device)
        return images.float().sub_(shift).mul_(scale)


def with_network_input(batch: Any, normalise: Normalise) -> Any:
    """`(images, labels, ...)` with the images normalised; the batch keeps its type."""
    images, *rest = batch
    converted = [normalise(images), *rest]
    return tuple(converted) if isinstance(batch, tuple) else converted


class NetworkBatches(Iterable):
    """A loader's batches with their images as the network takes them (normalised float32, on the
    loader's side): for code that feeds the network outside a Trainer, e.g. the data-driven
    init schemes. Iterable again and again, like the loader."""

    def __init__(self, loader: Iterable, normalise: Normalise) -> None:
        self.loader, self.normalise = loader, normalise

    def __iter__(self) -> Iterator:
        return (with_network_input(batch, self.normalise) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]
