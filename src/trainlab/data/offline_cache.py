"""Offline augmentation: N augmented copies of the training set, computed once, kept on disk.

`augment.mode=offline augment.copies=N` augments every training image N times before
training and trains on the originals plus the copies ((N + 1) x train_size images an epoch,
normalised, with no further augmentation). The copies live in

    <augment.cache_dir>/<augment.name>-<key>/  images.npy (uint8, N*n x H x W x C), labels.npy, meta.json

where <key> hashes everything that determines them: the transforms, the data source, the
split settings (fractions, train_size, classes, split_seed), the seed, N and the
Albumentations version. A later run with the same key reuses the folder instead of
recomputing it; change any of them and a new folder is written. Folders are written under a
temporary name and renamed when complete, so concurrent jobs never read half a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the folder's layout changes


def cache_key(material: Mapping[str, Any]) -> str:
    """A short stable hash of plain data (sorted JSON)."""
    payload = {**material, "albumentations": A.__version__, "format": FORMAT}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_folder(cache_dir: str | Path, name: str, material: Mapping[str, Any]) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "custom"
    return Path(cache_dir).expanduser() / f"{safe}-{cache_key(material)}"


def load(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (images, labels), memory-mapped, or None when the folder is not complete."""
    if not (folder / "meta.json").is_file():
        return None
    return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "labels.npy")


def materialise(
    folder: Path,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    pipeline: Any,
    copies: int,
    material: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """`copies` augmented versions of every image (copy c of image i at c * n + i), cached.

    `pipeline` maps a uint8 image to a uint8 image of the same size (a seeded Compose); it is
    applied image by image, copy by copy, in this order, so the result depends on its seed only.
    """
    cached = load(folder)
    if cached is not None:
        log.info(f"Offline augmentation: reusing {len(cached[1])} cached images in {folder}")
        return cached
    count = len(labels)
    first = np.asarray(images[0])
    out = np.empty((copies * count, *first.shape), dtype=np.uint8)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    # its own console: Lightning's RichProgressBar may hold the default one's live display
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"Offline augmentation ({folder.name})", total=copies * count)
        for copy in range(copies):
            for i in range(count):
                out[copy * count + i] = pipeline(image=np.asarray(images[i]))["image"]
                if i % 256 == 255:
                    progress.advance(task, 256)
            progress.update(task, completed=(copy + 1) * count)
    out_labels = np.tile(np.asarray(labels, dtype=np.int64), copies)

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    np.save(partial / "images.npy", out)
    np.save(partial / "labels.npy", out_labels)
    meta = {**material, "albumentations": A.__version__, "format": FORMAT, "shape": list(out.shape)}
    (partial / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    try:
        partial.rename(folder)
    except OSError:  # another job finished the same cache first: keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    log.info(f"Offline augmentation: wrote {len(out_labels)} images to {folder}")
    return load(folder) or (out, out_labels)
