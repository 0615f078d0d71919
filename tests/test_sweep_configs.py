"""A multirun's job configs are composed once: the sweeper's check composes them, the launcher
receives copies that no one else holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from trainlab.utils import sweep_configs
from trainlab.utils.sweep_configs import keeping_composed_configs

from conftest import QUIET, run_cli


class Loader:
    """A stand-in for Hydra's config loader: composing counts and builds a small config."""

    def __init__(self) -> None:
        self.composed = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed += 1
        return OmegaConf.create({"overrides": list(sweep_overrides), "hydra": {"job": {"num": None}}})


def test_the_check_composes_and_the_launcher_receives(monkeypatch):
    load = keeping_composed_configs(Loader.load_sweep_config)
    loader = Loader()
    batch = [["seed=1"], ["seed=2"], ["seed=3"]]
    for overrides in batch:  # Sweeper.validate_batch_is_legal
        load(loader, None, overrides)
    launched = []
    for num, overrides in enumerate(batch):  # the launcher
        config = load(loader, None, list(overrides))
        config.hydra.job.num = num
        launched.append(config)
    assert loader.composed == 3  # not 6
    assert [c.overrides for c in launched] == batch and [c.hydra.job.num for c in launched] == [0, 1, 2]
    # a copy is handed out once: the same overrides again compose afresh, unchanged by the launcher
    again = load(loader, None, ["seed=1"])
    assert loader.composed == 4 and again.hydra.job.num is None


def test_a_config_handed_out_is_never_handed_out_again():
    """A sweeper that does not check (or a repeated trial) asks the launcher's way twice: the
    second request gets a copy taken before the first one was changed."""
    load = keeping_composed_configs(Loader.load_sweep_config)
    loader = Loader()
    first = load(loader, None, ["lr=0.1"])
    first.hydra.job.num = 7  # what a launcher writes into the config it runs
    second = load(loader, None, ["lr=0.1"])
    assert second is not first and second.hydra.job.num is None


def test_at_most_kept_configs_wait(monkeypatch):
    monkeypatch.setattr(sweep_configs, "KEPT_CONFIGS", 2)
    load = keeping_composed_configs(Loader.load_sweep_config)
    loader = Loader()
    batch = [[f"seed={s}"] for s in range(4)]
    for overrides in batch:
        load(loader, None, overrides)
    for overrides in batch:
        load(loader, None, overrides)
    assert loader.composed == 4 + 2  # the two beyond the kept ones are composed again


def test_hydras_loader_is_wrapped_once():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    sweep_configs.compose_each_job_once()
    wrapped = ConfigLoaderImpl.load_sweep_config
    sweep_configs.compose_each_job_once()
    assert ConfigLoaderImpl.load_sweep_config is wrapped and wrapped.keeps_composed_configs


@pytest.mark.slow
def test_each_job_of_a_multirun_gets_its_own_config_and_directory(tmp_path):
    result = run_cli(
        "trainlab.train", "-m", "data=digits", "model=mlp", "model.width=16", "logger=csv",
        "trainer.max_steps=2", "test=false", "seed=1,2,3", *QUIET, f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    for num, seed in enumerate((1, 2, 3)):
        job = sweep / str(num)
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert config["seed"] == seed and hydra["job"]["num"] == num
        assert Path(hydra["runtime"]["output_dir"]) == job and (job / "summary.json").is_file()
