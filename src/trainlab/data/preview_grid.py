"""A picture of what a pipeline does: each row one training image, then augmented versions of it.

Used by `python -m trainlab.preview` and by the AugmentPreview callback (which logs the same
grid to W&B at the start of training). The grid draws from its own seeded generators, so
making one never changes the run's random streams.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trainlab.data.datamodule import ImageDataModule

BACKGROUND = (255, 255, 255)
SEPARATOR = (200, 40, 40)  # the line between the originals and their augmented versions


def augmentation_grid(
    datamodule: ImageDataModule, rows: int = 8, copies: int = 7, seed: int = 0, split: str = "train"
) -> list[list[np.ndarray]]:
    """rows x (1 + copies) uint8 images: each row one image of `split`, then `copies` augmentations."""
    if rows < 1 or copies < 1:
        raise ValueError(f"rows={rows} and copies={copies} must be positive integers.")
    datamodule.setup()
    images, labels = datamodule.splits[split]
    picks = _one_per_class(labels, rows, seed)
    pipeline = datamodule.augmentation_pipeline(seed)
    grid = []
    for index in picks:
        original = np.asarray(images[int(index)])
        grid.append([original, *(pipeline(image=original)["image"] for _ in range(copies))])
    return grid


def _one_per_class(labels: np.ndarray, count: int, seed: int) -> list[int]:
    """`count` random indices, covering as many classes as possible, sorted by class."""
    order = np.random.default_rng(seed).permutation(len(labels))
    first_of_class = {}
    for i in order:
        first_of_class.setdefault(int(labels[i]), int(i))
    picks = [first_of_class[c] for c in sorted(first_of_class)][:count]
    chosen = set(picks)
    picks += [int(i) for i in order if int(i) not in chosen][: count - len(picks)]
    return picks


def _rgb(image: np.ndarray, scale: int) -> np.ndarray:
    image = image if image.ndim == 3 else image[..., None]
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    return np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8))  # nearest-neighbour upscaling


def tile(grid: list[list[np.ndarray]], cell: int = 64, gap: int = 2, separator: int = 6) -> np.ndarray:
    """The images as one uint8 RGB array, upscaled (nearest) so each is about `cell` pixels."""
    height, width = grid[0][0].shape[:2]
    scale = max(1, math.ceil(cell / max(height, width)))
    h, w = height * scale, width * scale
    columns = len(grid[0])
    total_w = columns * w + (columns - 1) * gap + separator
    total_h = len(grid) * h + (len(grid) - 1) * gap
    canvas = np.full((total_h, total_w, 3), BACKGROUND, dtype=np.uint8)
    for r, row in enumerate(grid):
        for c, image in enumerate(row):
            top = r * (h + gap)
            left = c * (w + gap) + (separator if c else 0)
            canvas[top : top + h, left : left + w] = _rgb(image, scale)
    line = w + (separator - 2) // 2
    canvas[:, line : line + 2] = SEPARATOR
    return canvas


def with_title(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """`image` under a white strip holding the text `lines` (wrapped to the image's width)."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(image.shape[1], 320)
    wrapped: list[str] = []
    for line in lines:
        words, current = line.split(" "), ""
        for word in words:
            candidate = f"{current} {word}".strip()
            if current and probe.textlength(candidate, font=font) > width - 8:
                wrapped.append(current)
                current = word
            else:
                current = candidate
        wrapped.append(current)
    line_height = 14
    header = 6 + line_height * len(wrapped)
    canvas = Image.new("RGB", (width, header + image.shape[0]), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(wrapped):
        draw.text((4, 3 + i * line_height), text, fill=(0, 0, 0), font=font)
    canvas.paste(Image.fromarray(image), (0, header))
    return np.asarray(canvas)


def describe(datamodule: ImageDataModule, copies: int) -> list[str]:
    """Title lines: the pipeline, the source, and the transforms in order."""
    settings = datamodule.augment
    names = [_name(t) for t in settings.transforms] or ["(no transforms)"]
    return [
        f"augment={settings.name} ({settings.mode}) on {datamodule.source.name}",
        f"left of the red line: original; right: {copies} augmented versions",
        "transforms: " + ", ".join(names),
    ]


def _name(spec) -> str:
    """`HorizontalFlip`, or `OneOf[Blur, Sharpen]` for a composition."""
    name = (
        str(spec.get("_target_", spec)).rsplit(".", 1)[-1] if isinstance(spec, dict) else type(spec).__name__
    )
    children = spec.get("transforms") if isinstance(spec, dict) else None
    return f"{name}[{', '.join(_name(c) for c in children)}]" if children else name


def preview_image(
    datamodule: ImageDataModule, rows: int = 8, copies: int = 7, seed: int = 0, split: str = "train"
) -> np.ndarray:
    """The titled grid as one uint8 RGB array."""
    grid = augmentation_grid(datamodule, rows, copies, seed, split)
    return with_title(tile(grid), describe(datamodule, copies))


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path
