"""Show what the augmentation pipeline does, at the start of every training run.

Writes the same grid as `python -m trainlab.preview` (each row a training image, then
augmented versions of it) into the run directory and logs it to W&B as `augment/preview`,
so a dashboard shows next to the curves what the network was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

from trainlab.data.preview_grid import preview_image, save_png

log = logging.getLogger(__name__)


class AugmentPreview(pl.Callback):
    """On fit start: the augmentation grid as `<run dir>/<filename>` and, with a WandbLogger,
    as the W&B image `augment/preview`.

    Args:
        rows: training images shown (one per class first).
        copies: augmented versions of each.
        seed: which images and which augmentations; the grid has its own generators, so it
            does not change the run's random streams.
        filename: the PNG written in the run directory (trainer.default_root_dir).

    Skipped (with a log line) when the datamodule has no augmentation pipeline, e.g.
    `augment=none`, or is not a trainlab ImageDataModule.
    """

    def __init__(self, rows: int = 8, copies: int = 7, seed: int = 0, filename: str = "augment_preview.png"):
        if rows < 1 or copies < 1:
            raise ValueError(f"callbacks.augment_preview: rows={rows} and copies={copies} must be positive.")
        self.rows, self.copies, self.seed, self.filename = rows, copies, seed, filename
        self.path: Path | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "augmentation_pipeline"):
            log.info("AugmentPreview: no trainlab ImageDataModule; no augmentation preview.")
            return
        if not datamodule.augment.transforms:
            log.info(f"AugmentPreview: augment={datamodule.augment.name} has no transforms; no preview.")
            return
        image = preview_image(datamodule, rows=self.rows, copies=self.copies, seed=self.seed)
        self.path = save_png(image, Path(trainer.default_root_dir) / self.filename)
        log.info(f"Augmentation preview: {self.path}")
        caption = f"augment={datamodule.augment.name}: original (left), {self.copies} augmented versions"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="augment/preview", images=[image], caption=[caption])
