"""Mixing of training batches (Mixup, CutMix): timm's `timm.data.Mixup`, with the number of classes
taken from the network and the odd-sized batches timm refuses left unmixed."""

from __future__ import annotations

import torch
from timm.data import Mixup


class BatchMix:
    """Mixes a training batch with its reverse; returns the images and soft targets (probabilities).

    Args:
        num_classes: the network's; the Classifier fills it in.
        mixup_alpha, cutmix_alpha, prob, switch_prob, label_smoothing: timm.data.Mixup's.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        self.num_classes = num_classes
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # timm pairs example i with example n-1-i and refuses an odd batch; the last batch of an
        # epoch is odd-sized when data.drop_last=false: it trains unmixed, on its hard labels.
        if len(images) % 2:
            return images, labels
        # timm mixes the images in place: mix a copy, the batch the loader gave stays as it was
        return self.mixup(images.clone(), labels)
