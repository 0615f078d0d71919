"""`python -m trainlab.preview`: a PNG grid of originals and their augmented versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainlab.preview import preview

from conftest import run_cli


def test_preview_writes_a_grid_of_originals_and_augmentations(make_cfg, tmp_path):
    output = tmp_path / "grid.png"
    cfg = make_cfg(
        "augment=geometric", "data=digits", "rows=4", "copies=3", f"output={output}", config_name="preview"
    )
    assert preview(cfg) == output
    with Image.open(output) as png:
        png.verify()
    with Image.open(output) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        grid = np.asarray(png)
    # 4 rows of 8x8 digits upscaled 8x to 64 px, 2 px apart, under a title strip
    cells = 4 * 64 + 3 * 2
    header = grid.shape[0] - cells
    assert 0 < header < 100 and grid.shape[1] >= 4 * 64 + 3 * 2 + 6
    body = grid[header:]
    first_row = [body[:64, left : left + 64] for left in (0, 6 + 66, 6 + 2 * 66, 6 + 3 * 66)]
    original = first_row[0]
    assert (original[..., 0] == original[..., 1]).all()  # a grey digit drawn in RGB
    blocks = original[..., 0].reshape(8, 8, 8, 8)  # (row, y in block, column, x in block)
    assert (blocks == blocks[:, :1, :, :1]).all()  # nearest-neighbour upscaling: 8x8 constant blocks
    assert any(not np.array_equal(original, cell) for cell in first_row[1:])  # augmented versions differ


def test_preview_of_a_bad_pipeline_names_the_transform(make_cfg, tmp_path):
    cfg = make_cfg(
        "augment=basic",
        "data=digits",
        "augment.transforms=[{_target_:albumentations.RandomSnow,p:0.5}]",
        f"output={tmp_path / 'grid.png'}",
        config_name="preview",
    )
    with pytest.raises(ValueError, match=r"augment.transforms\[0\] \(RandomSnow\).*OnRGB"):
        preview(cfg)
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.slow
def test_preview_command_prints_the_png_path(tmp_path):
    result = run_cli(
        "trainlab.preview", "augment=weather", "data=digits", f"paths.log_dir={tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name == "augment_weather.png" and path.is_relative_to(tmp_path / "preview" / "runs")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 400
