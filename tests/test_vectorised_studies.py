"""A vectorised multirun (`hydra/launcher=vectorised`) against the same jobs run one by one: each
member is an ordinary job (its directory, records and checkpoints), and its weights and metrics
are the job's own (weights to 1e-5, metrics to 1e-6, after 2 epochs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, read_summary, run_cli

METRICS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc")
DIGITS_MLP = [
    "data=digits", "model=mlp", "model.depth=2", "model.width=32", "norm=batchnorm",
    "trainer.max_epochs=2", "logger=csv", "callbacks.rich_progress_bar=null",
    "trainer.enable_model_summary=false", "callbacks.layer_stats.every_n_steps=10",
]  # fmt: skip
MNIST_CNN = [
    "data=mnist5k", "data.train_size=640", "model=cnn", "norm=batchnorm", "trainer.max_epochs=2",
    "logger=csv", "callbacks.rich_progress_bar=null", "trainer.enable_model_summary=false",
]  # fmt: skip
VECTORISED = ["hydra/launcher=vectorised", "hydra.launcher.min_members=1"]


def multirun(tmp_path: Path, name: str, *overrides: str) -> list[Path]:
    """The job directories of `python -m trainlab.train -m <overrides>`, in job order."""
    sweep = tmp_path / name
    result = run_cli(
        "trainlab.train", "-m", *overrides, f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}", cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return jobs


def weights(job: Path) -> dict[str, torch.Tensor]:
    return torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def metric_rows(job: Path) -> dict[tuple[str, str], float]:
    """{(step, metric): value} of the job's csv/metrics.csv."""
    rows = {}
    with (job / "csv" / "metrics.csv").open() as file:
        for row in csv.DictReader(file):
            for name, value in row.items():
                if name not in ("step", "epoch") and value != "":
                    rows[(row["step"], name)] = float(value)
    return rows


def assert_same_jobs(
    alone: list[Path], together: list[Path], weight_tolerance: float = 1e-5, metric_tolerance: float = 1e-6
) -> None:
    assert len(alone) == len(together)
    for job, member in zip(alone, together, strict=True):
        expected, got = read_summary(job), read_summary(member)
        assert got["status"] == expected["status"] == "completed", got.get("error")
        assert got["overrides"] == expected["overrides"]
        for name in METRICS:
            assert got["metrics"][name] == pytest.approx(expected["metrics"][name], abs=metric_tolerance), (
                name
            )
        assert (got["global_step"], got["epochs"], got["best_epoch"]) == (
            expected["global_step"], expected["epochs"], expected["best_epoch"],
        )  # fmt: skip
        assert Path(got["best_checkpoint"]).parent == member / "checkpoints"
        assert got["per_class"]["test/acc"] == pytest.approx(
            expected["per_class"]["test/acc"], abs=metric_tolerance
        )
        reference, stacked = weights(job), weights(member)
        assert reference.keys() == stacked.keys()
        for name in reference:
            torch.testing.assert_close(
                stacked[name], reference[name], atol=weight_tolerance, rtol=0, msg=name
            )
        # the CSV a dashboard reads: the same metrics at the same steps
        expected_rows, got_rows = metric_rows(job), metric_rows(member)
        assert got_rows.keys() == expected_rows.keys()
        for key, value in expected_rows.items():
            if key[1] != "train/images_per_sec":
                assert got_rows[key] == pytest.approx(value, abs=metric_tolerance), key
        # the figures a multirun job draws (none of its own layer plots: the report draws them)
        assert sorted(p.name for p in member.glob("*.png")) == sorted(p.name for p in job.glob("*.png"))
        for name in ("layer_stats.csv", "confusion_matrix.csv", "per_class_acc.csv", ".hydra/overrides.yaml"):
            assert (member / name).is_file(), name


@pytest.mark.slow
@pytest.mark.parametrize("seeds", ["1", "1,2,3", "1,2,3,4,5,6,7,8"])
def test_digits_mlp_members_equal_the_jobs_run_one_by_one(tmp_path: Path, seeds: str) -> None:
    alone = multirun(tmp_path, "alone", *DIGITS_MLP, f"seed={seeds}")
    together = multirun(tmp_path, "together", *DIGITS_MLP, f"seed={seeds}", *VECTORISED)
    assert_same_jobs(alone, together)
    report = json.loads(json.dumps(sorted(p.name for p in (tmp_path / "together").iterdir())))
    assert "report.md" in report


@pytest.mark.slow
def test_members_with_their_own_init_lr_weight_decay_and_label_smoothing(tmp_path: Path) -> None:
    sweep = [
        *DIGITS_MLP, "optimizer=sgd", "optimizer.momentum=0.9", "scheduler=cosine", "seed=1,2",
        "init=kaiming_normal,lsuv", "optimizer.lr=0.05,0.1", "optimizer.weight_decay=0,1e-3",
        "loss.label_smoothing=0.1",
    ]  # fmt: skip
    alone = multirun(tmp_path, "alone", *sweep)
    together = multirun(tmp_path, "together", *sweep, *VECTORISED)
    assert len(together) == 16
    assert_same_jobs(alone, together)


@pytest.mark.slow
def test_fast_mode_members_agree_with_the_jobs_to_a_rounding(tmp_path: Path) -> None:
    # hydra.launcher.exact=false: the GPU's default mode (one batched kernel per layer and update)
    sweep = [*DIGITS_MLP, "optimizer=sgd", "optimizer.momentum=0.9", "seed=1,2,3"]
    alone = multirun(tmp_path, "alone", *sweep)
    together = multirun(tmp_path, "together", *sweep, *VECTORISED, "hydra.launcher.exact=false")
    assert_same_jobs(alone, together, weight_tolerance=1e-4, metric_tolerance=1e-4)


@pytest.mark.slow
def test_members_under_mixed_precision_agree_with_the_jobs(tmp_path: Path) -> None:
    # bf16-mixed (autocast): the members' layers are autocast as a network's are, the loss in float32
    sweep = [*DIGITS_MLP, "trainer.precision=bf16-mixed", "seed=1,2,3"]
    alone = multirun(tmp_path, "alone", *sweep)
    together = multirun(tmp_path, "together", *sweep, *VECTORISED)
    assert_same_jobs(alone, together, weight_tolerance=1e-4, metric_tolerance=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seeds", ["1", "1,2,3", "1,2,3,4,5,6,7,8"])
def test_mnist_cnn_with_batchnorm_members_equal_the_jobs_run_one_by_one(tmp_path: Path, seeds: str) -> None:
    alone = multirun(tmp_path, "alone", *MNIST_CNN, f"seed={seeds}")
    together = multirun(tmp_path, "together", *MNIST_CNN, f"seed={seeds}", *VECTORISED)
    assert_same_jobs(alone, together)
