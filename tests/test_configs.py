"""Every config in conf/ composes, passes the argument checks and instantiates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from trainlab import builders, checks
from trainlab.models.factory import build_network
from trainlab.utils.config import plain

from conftest import CONFIG_DIR

SKIP_GROUPS = {"hydra", "hparams_search"}  # hydra/ is plumbing; sweepers are composed with -m only
OPTIONS = sorted(
    (group.name, yaml.stem)
    for group in CONFIG_DIR.iterdir()
    if group.is_dir() and group.name not in SKIP_GROUPS
    for yaml in group.glob("*.yaml")
)
# Files that only exist to be included by other options of their group.
INCLUDED_ONLY = {("callbacks", name) for name in ("model_checkpoint", "lr_monitor", "rich_progress_bar")}
# Options that need another group's option: `native` keeps an architecture's own layers (timm's).
NEEDS = {(axis, "native"): ["model=timm", "model.name=test_resnet"] for axis in ("norm", "activation")}


def image_folder(root: Path, classes=("cat", "dog"), per_class=3) -> Path:
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((10, 12, 3), 40 * label + i, dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert {"data", "model", "init", "norm", "activation", "augment", "transfer", "optimizer"} <= groups
    assert {"scheduler", "trainer", "logger", "callbacks", "paths", "debug", "experiment"} <= groups
    assert {"loss", "mix"} <= groups


@pytest.mark.parametrize(("group", "option"), [o for o in OPTIONS if o not in INCLUDED_ONLY])
def test_option_composes_and_instantiates(make_cfg, tmp_path, group, option):
    overrides = [f"{group}={option}", *NEEDS.get((group, option), [])]
    if group == "data" and option == "folder":
        overrides.append(f"data.source.root={image_folder(tmp_path / 'images')}")
    cfg = make_cfg(*overrides, quiet=False)
    checks.check_config(cfg)

    datamodule = instantiate(cfg.data, _recursive_=False)  # sources load lazily: no download here
    assert datamodule.hparams.batch_size >= 1

    network = build_network(plain(cfg.model), plain(cfg.norm), plain(cfg.activation), (1, 28, 28), 10)
    assert network.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

    optimizer = instantiate(cfg.optimizer)(network.parameters())
    if cfg.scheduler:
        instantiate(cfg.scheduler)(optimizer, total_steps=100)
    loss = instantiate(cfg.loss)
    assert float(loss(torch.zeros(2, 10), torch.tensor([0, 1]))) > 0
    if cfg.mix:
        instantiate(cfg.mix, num_classes=10)
    builders.build_callbacks(cfg, has_logger=True)
    for logger_cfg in (cfg.logger or {}).values():
        instantiate(logger_cfg)
    if cfg.trainer.accelerator in ("cpu", "auto") or torch.cuda.is_available():
        instantiate(cfg.trainer)


def test_eval_config_composes(make_cfg):
    cfg = make_cfg("ckpt_path=some.ckpt", config_name="eval")
    assert cfg.ckpt_path == "some.ckpt" and cfg.split == "test"
