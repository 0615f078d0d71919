"""The real training entry point on embedded data: runs, learns, resumes, records, evaluates."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.eval import evaluate
from trainlab.tracking.loggers import find_wandb_run_id, wandb_run_id
from trainlab.train import train

from conftest import read_summary, run_cli

TINY_MLP = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv"]


@pytest.mark.parametrize("data", ["mnist5k", "digits"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fast_dev_run(make_cfg, data, model):
    cfg = make_cfg(f"data={data}", f"model={model}", "debug=fdr")
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 1
    assert set(summary["metrics"]) >= {"train/loss", "val/acc", "val/loss", "test/acc", "test/loss"}
    assert read_summary(cfg.paths.output_dir) == json.loads(json.dumps(summary))


def test_short_run_learns_and_leaves_its_files(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_MLP, "trainer.max_epochs=5", "seed=0")
    summary = train(cfg)
    run = tmp_path / "run"
    assert summary["status"] == "completed" and summary["seed"] == 0
    assert summary["metrics"]["test/acc"] > 0.85  # chance is 0.10
    assert summary["epochs"] == 5 and summary["global_step"] == 5 * 21  # 1293 train examples / 64
    assert "trainer.max_epochs=5" in summary["overrides"] and summary["error"] is None
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "csv" / "metrics.csv").is_file()
    assert summary["best_checkpoint"].startswith(str(run / "checkpoints"))
    # checkpoints hold plain data only: they load with torch's safe default
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["network"]["model"]["_target_"] == "trainlab.models.mlp.MLP"


@pytest.mark.parametrize("lightning_checkpoints", [False, True])
def test_without_callbacks_no_checkpoint_files_unless_asked(make_cfg, tmp_path, lightning_checkpoints):
    """callbacks=none: no checkpoint (Lightning's own is added only with enable_checkpointing=true)
    and the test stage uses the final weights."""
    asked = ["trainer.enable_checkpointing=true"] if lightning_checkpoints else []
    summary = train(make_cfg(*TINY_MLP, "callbacks=none", "trainer.max_epochs=1", *asked, quiet=False))
    assert summary["status"] == "completed" and "test/acc" in summary["metrics"]
    files = list((tmp_path / "run").rglob("*.ckpt"))
    assert (
        (len(files) == 1 and summary["best_checkpoint"] == str(files[0]))
        if lightning_checkpoints
        else not files
    )
    assert ("best_checkpoint" in summary) == lightning_checkpoints


@pytest.mark.slow
def test_seed_makes_runs_repeatable(make_cfg):
    first = train(make_cfg(*TINY_MLP, "trainer.max_epochs=1", "seed=0", run="a"))
    second = train(make_cfg(*TINY_MLP, "trainer.max_epochs=1", "seed=0", run="b"))
    third = train(make_cfg(*TINY_MLP, "trainer.max_epochs=1", "seed=1", run="c"))
    assert first["metrics"]["val/loss"] == second["metrics"]["val/loss"]
    assert first["metrics"]["val/loss"] != third["metrics"]["val/loss"]


def test_resume_continues_from_the_saved_step(make_cfg, tmp_path):
    train(make_cfg(*TINY_MLP, "trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 21
    # same directory, ckpt_path=last: continues to 3 epochs instead of starting over
    resumed = train(make_cfg(*TINY_MLP, "trainer.max_epochs=3", "ckpt_path=last"))
    assert resumed["status"] == "completed" and resumed["global_step"] == 63 and resumed["epochs"] == 3
    # any checkpoint path, from a new directory
    elsewhere = train(make_cfg(*TINY_MLP, "trainer.max_epochs=4", f"ckpt_path={last}", run="other"))
    assert elsewhere["global_step"] == 84


def test_resume_of_a_missing_checkpoint_is_a_clear_error(make_cfg):
    with pytest.raises(ValueError, match="ckpt_path='last': no checkpoint at .*hydra.run.dir"):
        train(make_cfg(*TINY_MLP, "ckpt_path=last"))


def test_failed_run_still_writes_its_summary(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_MLP, "model.width=0")
    with pytest.raises(Exception, match="width >= 1"):
        train(cfg)
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and "width >= 1" in summary["error"]
    assert summary["overrides"][-1] == "model.width=0"


def test_interrupted_run_is_marked(make_cfg, tmp_path, monkeypatch):
    from trainlab.models.classifier import Classifier

    def interrupt(self, batch, batch_idx):
        if batch_idx == 3:
            raise KeyboardInterrupt
        return Classifier._step(self, batch, "train")

    monkeypatch.setattr(Classifier, "training_step", interrupt)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(make_cfg(*TINY_MLP, "trainer.max_epochs=2"))
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["global_step"] == 3
    assert summary["interrupt_checkpoint"] == str(tmp_path / "run" / "checkpoints" / "last.ckpt")


def test_wandb_offline_files_and_resume_keeps_the_run_id(make_cfg, tmp_path):
    overrides = [o for o in TINY_MLP if not o.startswith("logger")]
    train(make_cfg(*overrides, "trainer.max_epochs=1", "logger=wandb", "tags=[smoke]"))
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "no offline W&B run was written"
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()  # CSV is on next to W&B
    train(make_cfg(*overrides, "trainer.max_epochs=2", "logger=wandb", "ckpt_path=last"))
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({wandb_run_id(r) for r in runs}) == 1, "resume started a new W&B run"


def test_the_wandb_run_id_to_resume_survives_two_runs_in_the_same_second(tmp_path):

    wandb_dir = tmp_path / "wandb"
    for name in ("offline-run-20261122_064724-wphswj6q", "offline-run-20261122_064724-wphswj6q-1"):
        (wandb_dir / name).mkdir(parents=True)
    (wandb_dir / "latest-run").mkdir()  # W&B's link to the newest run: no id of its own
    assert find_wandb_run_id(tmp_path) == "wphswj6q"
    (wandb_dir / "run-20261123_000001-a1b2c3d4").mkdir()  # online runs have no "offline-" prefix
    assert find_wandb_run_id(tmp_path) == "a1b2c3d4"


def test_wandb_config_holds_the_options_and_knobs_and_is_tagged(make_cfg, monkeypatch):
    import trainlab.builders as builders

    cfg = make_cfg(*TINY_MLP, "logger=wandb", "tags=[smoke]")
    loggers = builders.build_loggers(cfg, resume_from=None)
    wandb_logger = next(lg for lg in loggers if type(lg).__name__ == "WandbLogger")
    config = dict(wandb_logger.experiment.config)
    assert config["model"] == "mlp" and config["optimizer"] == "adam"
    assert config["hparams"]["model"]["width"] == 32 and config["hparams"]["optimizer"]["lr"] > 0
    assert {"smoke", "model:mlp", "data:digits", "norm:batchnorm"} <= set(wandb_logger.experiment.tags)
    import wandb

    wandb.finish()


def test_eval_restores_model_and_data_from_the_checkpoint(make_cfg, tmp_path):
    # 4 epochs (28 steps): enough to learn 3 classes well past 0.9 whatever the shuffle (0.93-0.97 over seeds)
    trained = train(make_cfg(*TINY_MLP, "trainer.max_epochs=4", "data.classes=[0,1,2]"))
    best = trained["best_checkpoint"]
    # no training overrides repeated: classes, model size and data source come from the checkpoint
    result = evaluate(make_cfg(f"ckpt_path={best}", "data.batch_size=7", run="eval", config_name="eval"))
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"], abs=1e-6)
    assert read_summary(tmp_path / "eval")["metrics"]["test/acc"] > 0.9
    # the confusion matrix of the evaluated split, as a training run leaves it
    assert result["per_class"]["test/acc"] == pytest.approx(trained["per_class"]["test/acc"], abs=1e-6)
    rows = (tmp_path / "eval" / "confusion_matrix.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and (tmp_path / "eval" / "per_class_acc.csv").is_file()
    plain = evaluate(make_cfg(f"ckpt_path={best}", "callbacks=none", run="eval_plain", config_name="eval"))
    assert "per_class" not in plain and not (tmp_path / "eval_plain" / "confusion_matrix.csv").exists()


@pytest.mark.slow
def test_multirun_of_two_jobs(tmp_path):
    result = run_cli(
        "trainlab.train",
        "-m",
        "model=mlp,cnn",
        "data=digits",
        "debug=fdr",
        f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    summaries = [read_summary(job) for job in jobs]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert "model=mlp" in summaries[0]["overrides"] and "model=cnn" in summaries[1]["overrides"]
    assert (jobs[0] / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_default_study_reaches_97_percent(tmp_path):
    """The promise of `make train`: the default CNN on mnist5k, >= 97% test accuracy on a CPU."""
    result = run_cli("trainlab.train", "logger=csv", f"paths.log_dir={tmp_path}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    summary = read_summary(run)
    assert summary["metrics"]["test/acc"] >= 0.97, summary
    assert str(run) in result.stdout + result.stderr  # it says where the results are


def test_multirun_jobs_share_a_wandb_group(make_cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    import trainlab.builders as builders

    cfg = make_cfg(*TINY_MLP, "logger=wandb")
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = "logs/train/multiruns/2026-01-01_00-00-00_000001"
    HydraConfig.instance().set_config(cfg)
    (logger,) = [
        lg for lg in builders.build_loggers(cfg, resume_from=None) if type(lg).__name__ == "WandbLogger"
    ]
    assert logger._wandb_init["group"] == "train-2026-01-01_00-00-00"  # the time, to the second
    assert logger._offline is True  # WANDB_MODE=offline in tests: never uploads
