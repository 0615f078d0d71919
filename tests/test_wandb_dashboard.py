"""What a W&B dashboard shows of a study: runs a person can tell apart, a config to group and
filter by, and summaries that mean what they say. Read from the offline `.wandb` files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from trainlab.tracking import naming
from trainlab.tracking.tracked_config import AXES, tracked_config
from trainlab.train import train
from trainlab.utils.config import ConfigError

from conftest import read_summary, run_cli, wandb_records

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "trainer.max_epochs=2"]
SWEEP = "init=xavier_normal,kaiming_normal"


def _wandb_view(job: Path) -> dict:
    """A job's W&B run as the dashboard would show it: name, group, job type, command, config, summary."""
    view: dict = {"config": {}, "summary": {}}
    for record in wandb_records(job):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            view.update(name=run.display_name, group=run.run_group, job_type=run.job_type)
        if kind in ("run", "config"):
            updates = (record.run.config if kind == "run" else record.config).update
            for update in updates:  # a nested key (W&B's own `_wandb.visualize...`) under its first part
                keys = [update.key] if update.key else list(update.nested_key)
                place = view["config"]
                for key in keys[:-1]:
                    place = place.setdefault(key, {})
                place[keys[-1]] = json.loads(update.value_json)
        if kind == "environment" and record.environment.args:
            view["args"] = list(record.environment.args)
        if kind == "summary":
            for update in record.summary.update:
                view["summary"][update.key or "/".join(update.nested_key)] = json.loads(update.value_json)
    return view


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> list[Path]:
    """The jobs of a two-job multirun, run as a user would (W&B's command line is the process's)."""
    root = tmp_path_factory.mktemp("study")
    result = run_cli(
        "trainlab.train",
        "-m",
        *TINY,
        SWEEP,
        "logger=wandb",
        "callbacks.layer_stats.plots=false",
        "callbacks.rich_progress_bar=null",
        f"paths.log_dir={root}",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted((root / "train" / "multiruns").glob("*/[0-9]"))


@pytest.mark.slow
def test_multirun_jobs_are_named_grouped_and_commanded_as_themselves(study):
    views = [_wandb_view(job) for job in study]
    assert [v["name"] for v in views] == ["init=xavier_normal", "init=kaiming_normal"]
    (group,) = {v["group"] for v in views}
    assert re.fullmatch(r"train-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", group), group
    assert study[0].parent.name.startswith(group.removeprefix("train-"))
    assert {v["job_type"] for v in views} == {"train"}
    for job, view in zip(study, views, strict=True):
        assert view["args"] == read_summary(job)["overrides"]  # the job's own, not the sweep's
        assert SWEEP not in view["args"] and "-m" not in view["args"]


@pytest.mark.slow
def test_multirun_config_holds_option_names_and_knobs_only(study):
    config = _wandb_view(study[1])["config"]
    assert config["init"] == "kaiming_normal" and config["model"] == "mlp" and config["data"] == "digits"
    assert config["norm"] == "batchnorm" and config["experiment"] is None and config["seed"] == 42
    assert config["hparams"]["model"] == {"depth": 1, "width": 16, "dropout": 0.0}
    assert config["hparams"]["trainer"]["max_epochs"] == 2
    # nothing leaked from the DataModule's or module's own hyperparameters, nothing twice
    assert not {"name", "fraction", "batch_size", "source", "network"} & set(config)
    assert set(config) == {*AXES, "seed", "hparams", "_wandb"}
    assert not [key for key in config if "." in key]  # dotted keys do not filter in W&B's API
    assert not {"paths", "hydra", "logger", "callbacks", "tags", "task_name"} & set(config["hparams"])
    assert "default_root_dir" not in config["hparams"]["trainer"]
    assert "_target_" not in json.dumps(config["hparams"])


@pytest.mark.slow
def test_multirun_summaries_hold_the_best_and_the_last_val_acc(study):
    for job in study:
        wandb_val_acc = _wandb_view(job)["summary"]["val/acc"]
        metrics = read_summary(job)["metrics"]
        assert wandb_val_acc == {
            "max": pytest.approx(metrics["val/acc_best"]),
            "last": pytest.approx(metrics["val/acc"]),
        }


# --- the pieces, in-process ---------------------------------------------------------------------


def test_run_names_show_what_tells_runs_apart():
    overrides = ["data=digits", "init=kaiming_normal", "seed=2", "logger=wandb", "paths.log_dir=/x"]
    assert naming.run_name(overrides, swept={"init", "seed"}, default="train") == "init=kaiming_normal,seed=2"
    # a single run: all its overrides but the bookkeeping
    assert naming.run_name(overrides, swept=None, default="train") == "data=digits,init=kaiming_normal,seed=2"
    assert naming.run_name(["logger=csv"], swept=None, default="deep_relu_init") == "deep_relu_init"
    assert naming.run_name(["+model.drop_rate=0.1"], swept=None, default="train") == "model.drop_rate=0.1"
    long = naming.run_name([f"model.width={'9' * 200}"], swept=None, default="train")
    assert len(long) == naming.MAX_NAME_LENGTH and long.endswith("…")


def _as_multirun(cfg, sweep_dir: Path) -> None:
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(sweep_dir)
    HydraConfig.instance().set_config(cfg)


def test_a_multirun_group_is_the_experiment_and_its_time(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "experiment=deep_relu_init")
    assert naming.run_group(cfg) is None  # a single run has no group
    _as_multirun(cfg, tmp_path / "multiruns" / "2026-11-30_09-12-03_123456")
    assert naming.run_group(cfg) == "deep_relu_init-2026-11-30_09-12-03"
    _as_multirun(cfg, tmp_path / "relu_study")  # a directory the user named is kept whole
    assert naming.run_group(cfg) == "deep_relu_init-relu_study"


def test_swept_keys_come_from_the_multiruns_record(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "init=kaiming_normal", "seed=3")
    assert naming.swept_keys() is None  # a single run
    sweep_dir = tmp_path / "sweep"
    _as_multirun(cfg, sweep_dir)
    assert naming.swept_keys() is None  # no record: unknown, the name shows every override
    sweep_dir.mkdir()
    arguments = [*TINY, SWEEP, "seed=range(1,4)", "logger=csv"]
    OmegaConf.save({"hydra": {"overrides": {"task": arguments}}}, sweep_dir / "multirun.yaml")
    assert naming.swept_keys() == {"init", "seed"}
    assert naming.job_name(cfg) == "init=kaiming_normal,seed=3"


def test_the_multiruns_record_is_read_once_per_version(make_cfg, tmp_path, monkeypatch):
    """Every job of a multirun names itself from `multirun.yaml`: parsed once, read again only
    when the file changes."""
    cfg = make_cfg(*TINY, "init=kaiming_normal", "seed=3")
    sweep_dir = tmp_path / "sweep"
    _as_multirun(cfg, sweep_dir)
    sweep_dir.mkdir()
    record = sweep_dir / "multirun.yaml"
    OmegaConf.save({"hydra": {"overrides": {"task": [SWEEP, "seed=1"]}}}, record)
    loads = []
    load = OmegaConf.load
    monkeypatch.setattr(naming.OmegaConf, "load", lambda path: loads.append(path) or load(path))
    assert [naming.swept_keys() for _ in range(3)] == [{"init"}] * 3
    assert len(loads) == 1
    OmegaConf.save({"hydra": {"overrides": {"task": [SWEEP, "seed=1,2,3"]}}}, record)
    assert naming.swept_keys() == {"init", "seed"}
    assert len(loads) == 2


def test_tracked_config_leaves_plumbing_out(make_cfg):
    config = tracked_config(make_cfg(*TINY, "augment=basic", "transfer=scratch", "experiment=deep_relu_init"))
    assert config["augment"] == "basic" and config["experiment"] == "deep_relu_init"
    hparams = config["hparams"]
    assert (
        "name" not in hparams["augment"] and "cache_dir" not in hparams["augment"]
    )  # the option again; a path
    assert hparams["augment"]["transforms"][0]["_target_"].startswith(
        "albumentations."
    )  # a pipeline names its steps
    assert (
        "augment" not in hparams["data"] and "num_workers" not in hparams["data"]
    )  # the augment group's; plumbing
    assert hparams["model"]["depth"] == 1 and hparams["optimizer"]["momentum"] == 0.9  # the experiment's SGD


def test_datamodule_hyperparameters_are_its_arguments_only(make_cfg):
    from trainlab.builders import build_datamodule

    datamodule = build_datamodule(make_cfg(*TINY))
    assert "name" not in datamodule.hparams and "fraction" not in datamodule.hparams
    assert datamodule.hparams.batch_size == 64
    assert datamodule._log_hyperparams is False  # the run logs its config itself, namespaced


def test_summary_records_the_best_epoch_and_the_tested_checkpoint(make_cfg, tmp_path):
    summary = train(make_cfg(*TINY, "trainer.max_epochs=3", "logger=csv", "callbacks.layer_stats=null"))
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as file:
        val_acc = {int(row["epoch"]): float(row["val/acc"]) for row in csv.DictReader(file) if row["val/acc"]}
    best_epoch = max(val_acc, key=val_acc.get)
    metrics = summary["metrics"]
    assert metrics["val/acc"] == pytest.approx(val_acc[2])  # the last epoch's, as before
    assert metrics["val/acc_best"] == pytest.approx(val_acc[best_epoch])
    assert summary["best_epoch"] == best_epoch
    assert summary["tested_checkpoint"] == summary["best_checkpoint"]
    assert Path(summary["best_checkpoint"]).name.startswith(f"epoch{best_epoch:03d}")


def test_the_packages_are_recorded_by_the_first_wandb_run_of_a_process(monkeypatch, tmp_path):
    """save_requirements=once: a multirun's later jobs run in the same process, with the same
    packages, and skip W&B's 70 ms listing of them; true records them in every run."""
    import wandb

    from trainlab.tracking import loggers

    monkeypatch.setattr(loggers, "_requirements_saved", False)
    recorded = []
    for setting in ("once", "once", True, False):
        logger = loggers.wandb_logger(
            offline=True, project="p", save_dir=str(tmp_path), save_requirements=setting
        )
        recorded.append(logger._wandb_init["settings"].x_save_requirements)
    assert recorded == [True, False, True, False]
    with pytest.raises(
        ConfigError, match=r"logger.wandb.save_requirements='yes': choose true, false or once"
    ):
        loggers.wandb_logger(offline=True, project="p", save_dir=str(tmp_path), save_requirements="yes")
    assert wandb.run is None  # no run was started
