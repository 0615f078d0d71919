"""Preview an augmentation pipeline: `python -m trainlab.preview augment=<name> data=<name>`.

Writes a PNG grid (each row one training image, left of a red line, then `copies` augmented
versions of it) and prints its path. Nothing is trained; the pipeline is built and checked
exactly as training would (bad transforms fail with the same message).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from trainlab import CONFIG_DIR
from trainlab.data.pipelines import AugmentSettings, build_augmentations
from trainlab.data.preview_grid import preview_image, save_png
from trainlab.utils.config import check_arguments, require_values


def preview(cfg: DictConfig) -> Path:
    """Write the grid that `cfg` describes; return the PNG's path."""
    require_values(cfg)
    build_augmentations(AugmentSettings.from_config(cfg.augment).transforms)  # its errors name the transform
    check_arguments(cfg.data, "data")
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    image = preview_image(datamodule, rows=cfg.rows, copies=cfg.copies, seed=cfg.seed, split=cfg.split)
    return save_png(image, cfg.output)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="preview")
def main(cfg: DictConfig) -> None:
    print(preview(cfg))


if __name__ == "__main__":
    main()
