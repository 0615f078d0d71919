"""trainlab's own Albumentations transforms, for what Albumentations cannot say in YAML alone.

- `PadAndRandomCrop`: the classic "pad by k pixels, crop back at a random place" with k given
  as a fraction of the image side, so one pipeline fits 8x8 digits, 28x28 MNIST and 32x32
  CIFAR (Albumentations' own PadIfNeeded/RandomCrop take absolute sizes).
- `OnRGB`: runs colour transforms (fog, snow, rain, sun flare, hue/saturation) on grey images
  by expanding them to RGB first and converting the result back to one channel, so that the
  model's input channels stay those of the source.

Both are ordinary Albumentations transforms: they draw their randomness from the generators
that the enclosing `Compose` hands them, so they are seeded like every other transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
from albumentations.core.composition import BaseCompose
from albumentations.core.type_definitions import Targets

# OpenCV border modes (what Albumentations' `border_mode` arguments take) as numpy.pad modes
NUMPY_PAD_MODES = {
    cv2.BORDER_CONSTANT: "constant",
    cv2.BORDER_REPLICATE: "edge",
    cv2.BORDER_REFLECT: "symmetric",
    cv2.BORDER_WRAP: "wrap",
    cv2.BORDER_REFLECT_101: "reflect",
}


def pixels(size: int | float, side: int) -> int:
    """A size in pixels: an int is pixels, a float in (0, 1) is a fraction of `side` (>= 1 px)."""
    if isinstance(size, float) and 0.0 < size < 1.0:
        return max(1, round(size * side))
    return int(size)


class PadAndRandomCrop(A.DualTransform):
    """Pad each side by `padding`, then crop a random window of the original size.

    The crop shifts the image by up to `padding` pixels in each direction and fills the
    uncovered border with `fill` (zero-padding: He et al. 2016 on CIFAR used 4 px on 32x32,
    i.e. `padding=0.125`). A float `padding` in (0, 1) is a fraction of the image side:
    0.125 gives 4 px on 32x32, 4 px on 28x28 (3.5 rounded) and 1 px on 8x8.

    Args:
        padding: pixels (int) or a fraction of the height/width (float in (0, 1)).
        border_mode: OpenCV border mode of the padding (0: constant `fill`, 1: replicate,
            2: reflect, 3: wrap, 4: reflect 101).
        fill: the padding value, for `border_mode=0`.
        p: probability of applying the transform.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(
        self,
        padding: int | float = 0.125,
        border_mode: int = cv2.BORDER_CONSTANT,
        fill: float = 0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if not (isinstance(padding, int) and padding >= 0) and not (
            isinstance(padding, float) and 0.0 < padding < 1.0
        ):
            raise ValueError(
                f"padding={padding!r} must be a number of pixels (int >= 0) or a fraction of the "
                "image side (float between 0 and 1)."
            )
        if border_mode not in NUMPY_PAD_MODES:
            raise ValueError(
                f"border_mode={border_mode!r} must be one of {sorted(NUMPY_PAD_MODES)} (OpenCV's)."
            )
        self.padding, self.border_mode, self.fill = padding, border_mode, fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        pad_y, pad_x = pixels(self.padding, height), pixels(self.padding, width)
        return {
            "pad_y": pad_y,
            "pad_x": pad_x,
            "top": self.py_random.randint(0, 2 * pad_y),
            "left": self.py_random.randint(0, 2 * pad_x),
        }

    def apply(
        self, img: np.ndarray, pad_y: int, pad_x: int, top: int, left: int, **params: Any
    ) -> np.ndarray:
        height, width = img.shape[:2]
        if self.border_mode == cv2.BORDER_CONSTANT:  # the common case, 15x faster than np.pad
            padded = np.full(
                (height + 2 * pad_y, width + 2 * pad_x, *img.shape[2:]), self.fill, dtype=img.dtype
            )
            padded[pad_y : pad_y + height, pad_x : pad_x + width] = img
        else:
            widths = ((pad_y, pad_y), (pad_x, pad_x)) + ((0, 0),) * (img.ndim - 2)
            padded = np.pad(img, widths, mode=NUMPY_PAD_MODES[self.border_mode])
        return np.ascontiguousarray(padded[top : top + height, left : left + width])

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return self.apply(mask, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("padding", "border_mode", "fill")


class OnRGB(BaseCompose):
    """Apply `transforms` to an RGB version of a grey image, then convert back to grey.

    Some transforms need three channels (RandomFog, RandomSnow, RandomRain, RandomSunFlare
    raise on one), others are meaningless on grey (hue and saturation of a grey pixel are
    zero). Wrap them:

        - _target_: trainlab.data.transforms.OnRGB
          grey: expand          # or `skip`: leave grey images alone
          transforms:
            - _target_: albumentations.RandomFog
              p: 0.2

    `grey=expand` repeats the channel three times, applies the transforms and converts back
    with the ITU-R 601 luma weights (exact for pixels the transforms left grey). RGB images
    pass straight through the transforms.

    Args:
        transforms: the transforms to apply (built by trainlab from the YAML list).
        grey: what to do with one-channel images: `expand` to RGB and back, or `skip`.
        p: probability of applying the group.
    """

    def __init__(
        self, transforms: Sequence[Any], grey: Literal["expand", "skip"] = "expand", p: float = 1.0
    ) -> None:
        if grey not in ("expand", "skip"):
            raise ValueError(f"grey={grey!r} must be 'expand' (RGB and back) or 'skip' (leave grey images).")
        super().__init__(list(transforms), p=p)
        self.grey = grey

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        if not (force_apply or self.py_random.random() < self.p):
            return data
        image = data["image"]
        is_grey = image.ndim == 2 or image.shape[-1] == 1
        if is_grey and self.grey == "skip":
            return data
        if is_grey:
            data["image"] = np.ascontiguousarray(np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1))
        for transform in self.transforms:
            data = transform(**data, force_apply=force_apply)
        if is_grey:
            grey = cv2.cvtColor(data["image"], cv2.COLOR_RGB2GRAY)
            data["image"] = grey.reshape(image.shape)
        return data

    def to_dict_private(self) -> dict[str, Any]:
        return {**super().to_dict_private(), "grey": self.grey}
