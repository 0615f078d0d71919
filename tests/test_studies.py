"""Studies at scale: grids, failure isolation, interrupt/resume, skip_completed, launchers, report."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import torch

from trainlab.callbacks.divergence import DivergenceGuard
from trainlab.report.__main__ import main as report_main
from trainlab.report.collect import load_jobs, varied_axes
from trainlab.report.tables import aggregate
from trainlab.run.summary import _same_run_key
from trainlab.train import train

from conftest import read_summary, run_cli

TESTS = Path(__file__).resolve().parent

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv"]
QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_model_summary=false"]


def fake_job(root: Path, num: int, overrides: list[str], status="completed", acc=None, error=None) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    metrics = {} if acc is None else {"test/acc": acc, "val/acc": acc - 0.01, "val/loss": 1 - acc}
    summary = {
        "status": status,
        "metrics": metrics,
        "overrides": overrides,
        "error": error,
        "wall_time_s": 1.0,
    }
    (job / "summary.json").write_text(json.dumps(summary))
    return job


def test_report_aggregates_over_seeds(tmp_path):
    accs = {("a", "1"): 0.90, ("a", "2"): 0.92, ("b", "1"): 0.80, ("b", "2"): 0.84}
    for num, ((option, seed), acc) in enumerate(accs.items()):
        fake_job(tmp_path, num, [f"init={option}", f"seed={seed}", "model=mlp"], acc=acc)
    fake_job(
        tmp_path,
        4,
        ["init=c", "seed=1", "model=mlp"],
        status="diverged",
        error="training loss became nan at step 7",
    )
    jobs = load_jobs(tmp_path)
    assert varied_axes(jobs) == ["init", "seed"]  # model is the same everywhere: not an axis
    table = aggregate(jobs, varied_axes(jobs)).set_index("init")
    assert table.loc["a", "test/acc mean"] == pytest.approx(0.91)
    assert table.loc["a", "test/acc std"] == pytest.approx(pd.Series([0.90, 0.92]).std())
    assert table.loc["b", "test/acc mean"] == pytest.approx(0.82)
    assert table.loc["c", "jobs"] == 1 and table.loc["c", "completed"] == 0

    assert report_main([str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "report.csv")
    assert len(rows) == 5 and set(rows.columns) >= {"init", "seed", "status", "test/acc", "wall_time_s"}
    markdown = (tmp_path / "report.md").read_text()
    assert "| a | 2 | 2 | **0.9100 ± 0.0141** |" in markdown  # the best option per metric is bold
    assert "job 4 (init=c, seed=1): **diverged** — training loss became nan at step 7" in markdown
    assert (tmp_path / "report_init.png").stat().st_size > 1000


def test_report_of_an_empty_directory_is_a_clear_error(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "holds no job directories" in capsys.readouterr().err


def test_divergence_guard_stops_and_marks_the_run(make_cfg, tmp_path):
    summary = train(make_cfg(*TINY, "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=3", "seed=0"))
    assert summary["status"] == "diverged"
    assert "training loss became nan" in summary["error"] or "inf" in summary["error"]
    assert summary["diverged_at_step"] <= 10 and summary["global_step"] <= 10  # stopped within steps
    assert read_summary(tmp_path / "run")["status"] == "diverged"


def test_divergence_guard_checks_without_a_sync_every_step():
    guard = DivergenceGuard(check_every_n_steps=5, max_loss=100.0)

    class Trainer:
        global_step, should_stop = 0, False

    trainer = Trainer()
    for step, loss in enumerate([1.0, 2.0, 500.0, 3.0, 4.0, 5.0], start=1):
        trainer.global_step = step
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, step)
        if step < 5:
            assert not trainer.should_stop  # flagged on device, read only every 5 steps
    # stopped at the check (step 5); diverged_at_step and the reason name the step of the bad loss
    assert trainer.should_stop and guard.diverged_at_step == 3 and "max_loss=100 at step 3" in guard.reason


def test_interrupted_run_resumes_to_the_same_final_step(make_cfg, tmp_path, monkeypatch):
    uninterrupted = train(make_cfg(*TINY, "trainer.max_epochs=3", run="full"))
    from trainlab.models.classifier import Classifier

    original = Classifier.training_step

    def interrupt_at_step_30(self, batch, batch_idx):
        if self.trainer.global_step == 30:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", interrupt_at_step_30)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(make_cfg(*TINY, "trainer.max_epochs=3", run="cut"))
    assert read_summary(tmp_path / "cut")["status"] == "interrupted"
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 30  # saved at the interrupt, not at the last epoch end (21)
    monkeypatch.setattr(Classifier, "training_step", original)
    resumed = train(make_cfg(*TINY, "trainer.max_epochs=3", "ckpt_path=last", run="cut"))
    assert resumed["status"] == "completed"
    assert resumed["global_step"] == uninterrupted["global_step"] == 63


def test_skip_completed(make_cfg, tmp_path):
    first = train(make_cfg(*TINY, "trainer.max_epochs=1", "seed=3", run="train/runs/a"))
    again = train(
        make_cfg(*TINY, "trainer.max_epochs=1", "seed=3", "skip_completed=true", run="train/runs/b")
    )
    assert again["skipped"] and again["completed_in"] == str(tmp_path / "train" / "runs" / "a")
    assert again["metrics"] == first["metrics"] and again["status"] == "completed"
    assert not (tmp_path / "train" / "runs" / "b" / "checkpoints").exists()  # nothing was trained
    other = train(
        make_cfg(*TINY, "trainer.max_epochs=1", "seed=4", "skip_completed=true", run="train/runs/c")
    )
    assert not other.get("skipped") and other["status"] == "completed"


def test_skip_completed_ignores_what_does_not_change_the_run():
    plain = _same_run_key(["seed=3", "model=mlp"])
    shown = ["model=mlp", "callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=true", "seed=3"]
    assert _same_run_key([*shown, "logger=csv", "tags=[a]", "trusted_targets=[my_pkg]"]) == plain
    assert _same_run_key(["seed=4", "model=mlp"]) != plain


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_multirun(tmp_path):
    """width=0 raises, lr=1e6 diverges, the one sound job still runs; the exit code says so."""
    result = run_cli(
        "trainlab.train", "-m", *TINY, *QUIET, "optimizer=sgd", "optimizer.lr=1e6,0.05",
        "model.width=0,32", "trainer.max_epochs=1", f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    outcome = {}
    for job in sweep.iterdir():
        if job.is_dir():
            summary = read_summary(job)
            setting = dict(
                o.split("=", 1) for o in summary["overrides"] if o.startswith(("optimizer.lr", "model.width"))
            )
            outcome[(float(setting["optimizer.lr"]), int(setting["model.width"]))] = summary["status"]
    assert outcome == {
        (1e6, 0): "failed",
        (0.05, 0): "failed",
        (1e6, 32): "diverged",
        (0.05, 32): "completed",
    }
    report = (sweep / "report.md").read_text()
    assert "**failed**" in report and "**diverged**" in report and "width >= 1" in report


@pytest.mark.slow
def test_grid_2x2_with_2_seeds_writes_the_report(tmp_path):
    result = run_cli(
        "trainlab.train", "-m", *TINY, *QUIET, "model.width=16,32", "optimizer=adam,sgd", "seed=1,2",
        "trainer.max_epochs=1", f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    rows = pd.read_csv(sweep / "report.csv")
    assert len(rows) == 8 and set(rows["status"]) == {"completed"}
    markdown = (sweep / "report.md").read_text()
    assert "8 jobs; axes: model.width, optimizer, seed; seeds: 1, 2" in markdown
    table_rows = [
        line for line in markdown.splitlines() if line.startswith("| 16 |") or line.startswith("| 32 |")
    ]
    assert len(table_rows) == 4 and all("| 2 | 2 |" in line for line in table_rows)  # 2 seeds each
    for name in ("report_model_width.png", "report_optimizer.png", "curves_val_acc_optimizer.png"):
        assert (sweep / name).is_file()


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path, monkeypatch):
    # each job waits for the other before it trains (tests/meet_callback.py): jobs run one
    # after the other never meet, however fast or slow the machine is
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    meeting = tmp_path / "meeting"
    result = run_cli(
        "trainlab.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, *QUIET,
        "model.width=16,32", "trainer.max_epochs=3", "+callbacks.meet._target_=meet_callback.MeetPeers",
        f"+callbacks.meet.folder={meeting}", "+callbacks.meet.peers=2", f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    spans = [read_summary(sweep / job) for job in ("0", "1")]
    assert all(s["status"] == "completed" for s in spans)
    assert sorted(path.name for path in meeting.glob("*.met")) == ["0.met", "1.met"], "the jobs did not meet"
    start = [datetime.fromisoformat(s["started_at"]) for s in spans]
    end = [datetime.fromisoformat(s["finished_at"]) for s in spans]
    assert max(start) < min(end), "the two jobs did not overlap in time"
    assert "1 CPU thread(s) per job (2 parallel job(s))" in result.stdout + result.stderr


@pytest.mark.slow
def test_ddp_sim_fits_with_two_processes(tmp_path):
    result = run_cli(
        "trainlab.train", "trainer=ddp_sim", *TINY, *QUIET, "trainer.max_epochs=2", f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    summary = read_summary(run)
    # 1293 training examples over 2 processes of batch 64: 11 steps per epoch each
    assert summary["status"] == "completed" and summary["global_step"] == 22 and summary["epochs"] == 2
    assert summary["metrics"]["test/acc"] > 0.5


@pytest.mark.slow
def test_submitit_local_runs_the_jobs_in_their_own_processes_and_records_each_outcome(tmp_path):
    """hydra/launcher=submitit_local (the code path of SLURM, here): each job in a process of its
    own; a job that fails or diverges is recorded and the others finish; the report and the exit
    code say so, as with the default launcher."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "trainlab.train", "-m", "hydra/launcher=submitit_local", *TINY, *QUIET, "trainer.max_epochs=2",
        "optimizer=sgd", "optimizer.lr=0.05,1000", "data.train_size=null,5", f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]  # a job did not complete
    outcomes = {
        tuple(
            o for o in summary["overrides"] if o.startswith(("optimizer.lr=", "data.train_size="))
        ): summary["status"]
        for summary in (read_summary(sweep / str(job)) for job in range(4))
    }
    assert outcomes == {
        ("optimizer.lr=0.05", "data.train_size=null"): "completed",
        ("optimizer.lr=0.05", "data.train_size=5"): "failed",  # too few examples: a ConfigError
        ("optimizer.lr=1000", "data.train_size=null"): "diverged",
        ("optimizer.lr=1000", "data.train_size=5"): "failed",
    }
    assert (sweep / ".submitit").is_dir()  # submitit's own logs of each job's process
    jobs = load_jobs(sweep)
    assert sorted(jobs["status"]) == ["completed", "diverged", "failed", "failed"]
    assert "3 of 4 jobs did not complete" in result.stdout + result.stderr
    assert (sweep / "report.md").is_file()


@pytest.mark.slow
def test_ddp_on_the_cpu_trains_with_per_process_batchnorm(tmp_path):
    """trainer=ddp asks for SyncBatchNorm, which torch runs on GPUs only: on the CPU (gloo) the run
    trains with each process's own BN statistics, and says so, instead of failing."""
    result = run_cli(
        "trainlab.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "norm=batchnorm",
        *TINY, "logger=wandb", *QUIET, "trainer.max_epochs=1", f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "torch's SyncBatchNorm runs on GPUs only" in output
    (run,) = (tmp_path / "train" / "runs").iterdir()  # one run directory for both processes
    summary = read_summary(run)
    # 1293 training examples over 2 processes of batch 64: 11 steps per epoch each
    assert summary["status"] == "completed" and summary["global_step"] == 11
    assert len(list((run / "checkpoints").glob("*.ckpt"))) == 2  # the best and last.ckpt, once each
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run, from rank 0
    assert output.count("Run completed") == 1  # one account of the run, not one per process
    # layer statistics are measured by one process: each (step, layer, statistic) once
    stats = pd.read_csv(run / "layer_stats.csv")
    assert len(stats) and not stats.duplicated(["step", "layer", "stat"]).any()
    assert set(stats["step"]) == {0}  # sampled every 50 steps: step 0 of the 11


def validated_by_two_processes_and_by_one(tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    """Train on 2 CPU processes (trainer=ddp), then validate last.ckpt in one process: the run's
    validation metrics (reduced over its processes) and the single process's."""
    import lightning.pytorch as pl

    from trainlab.eval import load_checkpoint

    result = run_cli(
        "trainlab.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *overrides,
        *TINY, *QUIET, "trainer.max_epochs=2", "test=false", f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    module, datamodule = load_checkpoint(run / "checkpoints" / "last.ckpt")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (single,) = trainer.validate(module, datamodule=datamodule, weights_only=True, verbose=False)
    return read_summary(run)["metrics"], single


@pytest.mark.slow
def test_ddp_validation_reduces_over_processes_to_the_single_process_accuracy(tmp_path):
    """Two processes each validate half of the 180 validation images; their accuracy, reduced
    over the processes, is the accuracy one process computes with the same weights (last.ckpt).
    norm=none: without BatchNorm, whose running statistics are each process's own on the CPU,
    both processes hold the same network."""
    reduced, single = validated_by_two_processes_and_by_one(tmp_path, "norm=none")
    assert reduced["val/acc"] == pytest.approx(single["val/acc"], abs=1e-6) and 0.3 < reduced["val/acc"] < 1
    assert reduced["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)  # not process 0's half


@pytest.mark.slow
def test_ddp_precise_bn_gives_every_process_the_population_statistics_of_all_batches(tmp_path):
    """callbacks=precise_bn under 2 processes: the BatchNorm statistics are summed over both
    processes' batches, so both hold the same network, and validation (reduced over them) equals
    one process's with last.ckpt."""
    reduced, single = validated_by_two_processes_and_by_one(
        tmp_path, "norm=batchnorm", "callbacks=precise_bn", "callbacks.precise_bn.num_batches=20"
    )
    assert reduced["val/acc"] == pytest.approx(single["val/acc"], abs=1e-6)
    assert reduced["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_writes_the_offline_augmentation_once_and_stops_together_on_divergence(tmp_path):
    """Two CPU processes: the offline copies are written by one process (Lightning's prepare_data)
    and read by both; a loss that explodes stops both processes at the same check, and the run is
    recorded `diverged` once."""
    cache = tmp_path / "cache"
    result = run_cli(
        "trainlab.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *TINY, *QUIET,
        "trainer.max_epochs=2", "augment=basic", "augment.mode=offline", "augment.copies=1",
        f"augment.cache_dir={cache}", "optimizer=sgd", "optimizer.lr=1000", f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert output.count("Offline augmentation: wrote") == 1 and "reusing" in output
    (folder,) = cache.iterdir()
    assert (folder / "images.npy").is_file()
    (run,) = (tmp_path / "train" / "runs").iterdir()
    summary = read_summary(run)
    assert summary["status"] == "diverged" and summary["diverged_at_step"] == 20
    assert output.count("[WARNING] - Run diverged:") == 1  # from one process, not from each


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_start_workers_for_that_job_alone(tmp_path):
    """Lightning starts the second process by running the command line again: in a multirun that
    was the whole sweep, run by the worker in step with the main process (a second multirun
    directory with its own summaries and report). Each job now gets a worker that runs it alone."""
    result = run_cli(
        "trainlab.train", "-m", "seed=1,2", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        *TINY, *QUIET, "trainer.max_epochs=1", f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()  # one multirun directory, not one per process
    for job, seed in (("0", 1), ("1", 2)):
        summary = read_summary(sweep / job)
        assert summary["status"] == "completed" and summary["global_step"] == 11  # 2 processes' share
        assert f"[rank: 1] Seed set to {seed}" in (sweep / job / "train.log").read_text()  # its own worker
    assert (result.stdout + result.stderr).count("Study report:") == 1


def test_report_logs_table_and_plots_to_wandb_offline(tmp_path):
    from trainlab.report.write import write_report

    for num, (option, acc) in enumerate([("a", 0.9), ("b", 0.8)]):
        fake_job(tmp_path, num, [f"init={option}"], acc=acc)
    write_report(tmp_path, log_to_wandb=True)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = [p.name for p in (run / "files" / "media").rglob("*") if p.is_file()]
    assert any(name.startswith("report_init") and name.endswith(".png") for name in media)
    assert any("table" in name for name in media)


@pytest.mark.slow
def test_optuna_search_returns_the_optimised_metric(tmp_path):
    result = run_cli(
        "trainlab.train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2", *TINY, *QUIET, "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    import yaml

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.weight_decay"}
    accuracies = [read_summary(sweep / str(n))["metrics"]["val/acc"] for n in range(3)]
    assert best["best_value"] == pytest.approx(max(accuracies))
