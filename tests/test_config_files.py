"""Config files are read once per process and search path, and compose into the configs Hydra
composes reading them anew (trainlab.utils.config_files)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_repository import CachingConfigRepository, ConfigRepository
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from trainlab import CONFIG_DIR
from trainlab.utils import config_files
from trainlab.utils.config_files import read_config_files_once, reading_each_file_once

STUDY = ["data=digits", "model=mlp", "model.width=16", "logger=csv"]
VARIANTS = [
    [*STUDY, f"seed={seed}", f"init={init}", f"norm={norm}"]
    for seed in (1, 2)
    for init in ("kaiming_normal", "xavier_uniform")
    for norm in ("none", "batchnorm")
]


def _hydras_own() -> object:
    load = CachingConfigRepository.__dict__["load_config"]
    return getattr(load, "__wrapped__", load)


@pytest.fixture
def read_once(monkeypatch):
    """Hydra's loader wrapped for this test only, with nothing read yet; returns the configs
    Hydra reads from its sources (the config paths), as they are read."""
    monkeypatch.setattr(CachingConfigRepository, "load_config", reading_each_file_once(_hydras_own()))
    monkeypatch.setattr(config_files, "_results", {})
    return _count_reads(monkeypatch)


def _count_reads(monkeypatch) -> list[str]:
    """The config files Hydra reads from its sources, as they are read (ConfigStore entries and
    absent options, `debug/None`, are not files: read, or looked for, every time)."""
    reads = []
    load = ConfigRepository.load_config

    def counting(self, config_path):
        result = load(self, config_path)
        if result is not None and str(result.path).startswith(("file://", "pkg://")):
            reads.append(config_path)
        return result

    monkeypatch.setattr(ConfigRepository, "load_config", counting)
    return reads


def _composed(overrides: list[str], config_dir: str = CONFIG_DIR, name: str = "train") -> dict:
    """The job's config and Hydra's, without what differs between any two compositions."""
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        config = OmegaConf.to_container(compose(name, overrides=overrides, return_hydra_config=True))
    for key in ("runtime", "job"):
        config.get("hydra", {}).pop(key, None)
    return config


def test_jobs_compose_as_hydra_composes_them_reading_each_file_once(monkeypatch):
    """Jobs that choose other options of two groups and another seed, composed after one another
    as a multirun's are: the same configs as composed by Hydra alone, and no file is read twice."""
    monkeypatch.setattr(CachingConfigRepository, "load_config", _hydras_own())
    reference = [_composed(overrides) for overrides in VARIANTS]
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(CachingConfigRepository, "load_config", reading_each_file_once(_hydras_own()))
    monkeypatch.setattr(config_files, "_results", {})
    assert [_composed(overrides) for overrides in reversed(VARIANTS)] == list(reversed(reference))
    assert reads and len(reads) == len(set(reads))
    reads.clear()
    assert _composed(VARIANTS[0]) == reference[0]
    assert reads == []  # every file this job needs was read by an earlier one


def test_each_search_path_reads_its_own_files(tmp_path, read_once):
    for name, lr in (("a", 0.1), ("b", 0.2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.yaml").write_text(f"lr: {lr}\n")
    assert _composed([], str(tmp_path / "a"), "study")["lr"] == 0.1
    assert _composed([], str(tmp_path / "b"), "study")["lr"] == 0.2
    assert _composed([], str(tmp_path / "a"), "study")["lr"] == 0.1
    assert read_once.count("study") == 2  # once in each directory


def test_config_store_entries_are_built_anew(tmp_path, read_once):
    store = ConfigStore.instance()
    store.store(name="trainlab_probe", node={"value": 1})
    assert _composed([], str(tmp_path), "trainlab_probe")["value"] == 1
    store.store(name="trainlab_probe", node={"value": 2})
    assert _composed([], str(tmp_path), "trainlab_probe")["value"] == 2


def test_hydras_loader_is_wrapped_once(monkeypatch):
    monkeypatch.setattr(CachingConfigRepository, "load_config", _hydras_own())
    read_config_files_once()
    wrapped = CachingConfigRepository.load_config
    read_config_files_once()
    assert CachingConfigRepository.load_config is wrapped and wrapped.reads_each_file_once
    assert wrapped.__wrapped__ is _hydras_own()
