"""Resuming a run: the same steps and the same metrics as the uninterrupted run, the run's
metrics.csv kept, checkpoints written atomically."""

from __future__ import annotations

import csv
import errno
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from trainlab import builders
from trainlab.checkpoints.atomic_io import AtomicCheckpointIO
from trainlab.data.sampler import EpochSampler, SampleKey
from trainlab.models.classifier import Classifier
from trainlab.train import train

from conftest import QUIET, compose_config

# 300 training examples in batches of 64: 5 steps an epoch, the last one short. augment=basic
# (random flips and crops) and noisy training steps: resuming must restore every random draw.
TINY = [
    *QUIET,
    "data=digits",
    "data.train_size=300",
    "model=mlp",
    "model.depth=1",
    "model.width=32",
    "augment=basic",
    "logger=csv",
    "trainer.max_epochs=2",
    "callbacks.layer_stats=null",
    "callbacks.augment_preview=null",
    "callbacks.lr_monitor=null",
]
# A run of 1 epoch resumed to 2 has the learning rates of a 2-epoch run only at a constant rate;
# the interrupted run keeps the default cosine schedule (it reads the number of steps early).
CONSTANT = ["scheduler=none"]
COMPARED = ("val/acc", "val/loss", "test/acc", "train/loss", "train/acc")
INTERRUPT_AT_STEP = 7  # the third batch of the second epoch


def noisy_training_step(interrupt_at: int | None = None):
    """Classifier.training_step on inputs with noise drawn from torch's, numpy's and Python's
    global generators (as dropout or input noise would); optionally Ctrl-C at a step."""
    original = Classifier.training_step

    def step(self, batch, batch_idx):
        if self.trainer.global_step == interrupt_at:
            raise KeyboardInterrupt
        images, labels = batch
        scale = 0.2 * (1.0 + np.random.rand() + random.random())
        return original(self, (images + scale * torch.randn_like(images), labels), batch_idx)

    return step


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Uninterrupted runs, and runs resumed from an epoch's end and from an interrupt mid-epoch."""
    root = tmp_path_factory.mktemp("resume")

    def run(name: str, *overrides: str, interrupt_at: int | None = None) -> tuple[dict, Path]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Classifier, "training_step", noisy_training_step(interrupt_at))
            return train(compose_config([*TINY, *overrides], root / name, log_dir=root)), root / name

    results = {"full": run("full"), "full_constant": run("full_constant", *CONSTANT)}
    run("epoch_end", *CONSTANT, "trainer.max_epochs=1")
    results["epoch_end"] = run("epoch_end", *CONSTANT, "ckpt_path=last")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run("interrupted", interrupt_at=INTERRUPT_AT_STEP)
    last = torch.load(root / "interrupted" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == INTERRUPT_AT_STEP  # saved at the interrupt, mid-epoch
    results["interrupted"] = run("interrupted", "ckpt_path=last")
    # with worker processes: the same batches, augmentations and noise as without
    workers = "data.num_workers=2"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run("interrupted_workers", workers, interrupt_at=INTERRUPT_AT_STEP)
    results["interrupted_workers"] = run("interrupted_workers", workers, "ckpt_path=last")
    return results


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("resumed", "uninterrupted"),
    [("epoch_end", "full_constant"), ("interrupted", "full"), ("interrupted_workers", "full")],
)
def test_a_resumed_run_ends_as_the_uninterrupted_one(runs, resumed, uninterrupted):
    (full, full_dir), (summary, run_dir) = runs[uninterrupted], runs[resumed]
    assert summary["status"] == full["status"] == "completed"
    assert summary["global_step"] == full["global_step"] == 10
    for name in COMPARED:
        assert summary["metrics"][name] == pytest.approx(full["metrics"][name], abs=1e-6), name
    expected = final_weights(full_dir)
    weights = final_weights(run_dir)
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_resume_appends_to_the_runs_metrics_csv(runs):
    _, run_dir = runs["epoch_end"]
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    epochs_with_val = sorted({int(float(r["epoch"])) for r in rows if r.get("val/acc")})
    assert epochs_with_val == [0, 1]  # the first run's epoch and the resumed one's
    assert any(r.get("test/acc") for r in rows)  # the first run's test, before the resume
    assert rows[-1].get("test/acc")  # and the resumed run's, last


def test_the_training_order_depends_on_seed_and_epoch_only():
    first = list(EpochSampler(10, seed=3))
    assert sorted(k.index for k in first) == list(range(10)) and {k.epoch for k in first} == {0}
    assert list(EpochSampler(10, seed=3)) == first  # whatever the global generator did meanwhile
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(1)
    second = list(sampler)
    assert [k.index for k in second] != [k.index for k in first] and {k.epoch for k in second} == {1}
    resumed = EpochSampler(10, seed=3, epoch=1, start=4)
    assert list(resumed) == second[4:]  # a resumed epoch: the rest of the same order
    assert list(resumed) == second  # then whole epochs again


@pytest.mark.parametrize("processes", [2, 3])
def test_several_processes_keep_their_shares_and_resume_where_they_stopped(processes):
    """DDP: each process gets the share of the epoch's order that Lightning's
    DistributedSamplerWrapper gave it (so DDP runs keep their data order), and a run resumed
    after 3 batches of 4 goes on, in every process, with the rest of its share."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from trainlab.data.sampler import ShardedEpochSampler

    size, batch_size, trained = 50, 4, 3
    shares = []
    for rank in range(processes):
        sharded = ShardedEpochSampler(
            size, seed=3, num_replicas=processes, rank=rank, epoch=1, shuffle_seed=42
        )
        wrapped = DistributedSamplerWrapper(
            EpochSampler(size, seed=3, epoch=1), num_replicas=processes, rank=rank, shuffle=True, seed=42
        )
        wrapped.set_epoch(1)
        shares.append(list(sharded))
        assert shares[-1] == list(wrapped) and len(shares[-1]) == len(sharded) == -(-size // processes)
        resumed = ShardedEpochSampler(
            size,
            seed=3,
            num_replicas=processes,
            rank=rank,
            epoch=1,
            start=trained * batch_size,
            shuffle_seed=42,
        )
        assert list(resumed) == shares[-1][trained * batch_size :]  # the rest of this process's share
        assert list(resumed) == shares[-1]  # then whole epochs again
    assert {k.index for share in shares for k in share} == set(range(size))  # every example


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_is_drawn_from_seed_epoch_and_example(make_cfg, workers):
    """The same examples in the same epoch get the same augmentation, in any order and with any
    number of workers; another epoch, other augmentations."""
    from trainlab.data.datamodule import ImageDataModule

    cfg = make_cfg("data=digits", "data.train_size=64", "augment=geometric", "data.batch_size=16")
    datamodule = builders.build_datamodule(cfg)
    assert isinstance(datamodule, ImageDataModule)
    dataset = datamodule.dataset("train")
    keys = [SampleKey(epoch, index) for epoch in (0, 1) for index in range(16)]
    alone = torch.stack([dataset[key][0] for key in reversed(keys)]).flip(0)
    loader = DataLoader(dataset, batch_size=8, sampler=keys, num_workers=workers)
    batched = torch.cat([images for images, _ in loader])
    assert torch.equal(batched, alone)
    assert not torch.equal(batched[:16], batched[16:])


def test_trainer_writes_checkpoints_through_the_atomic_plugin(make_cfg):
    trainer = builders.build_trainer(make_cfg("data=digits", "model=mlp", "logger=csv"), [], [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    configured = make_cfg(
        "data=digits",
        "trainer.precision=null",
        "+trainer.plugins=[{_target_: lightning.pytorch.plugins.precision.DoublePrecision}]",
    )
    trainer = builders.build_trainer(configured, [], [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # merged with the config's
    assert type(trainer.precision_plugin).__name__ == "DoublePrecision"


def test_a_failed_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(1000)}, path)
    good = path.read_bytes()

    def disk_full_half_way(obj, file, *args, **kwargs):
        file.write(b"\x80\x02half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("trainlab.checkpoints.atomic_io.torch.save", disk_full_half_way)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(1000)}, path)
    assert path.read_bytes() == good
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


@pytest.mark.slow
def test_a_ddp_run_resumed_mid_epoch_ends_as_the_uninterrupted_one(tmp_path):
    """2 CPU processes, 150 examples each a epoch (3 steps), interrupted at step 4 (one batch into
    the second epoch) and resumed: the same final weights and metrics as the run that was never
    interrupted. Before the processes shared a resumable order, the resumed epoch started its
    order again (0.067 apart in the weights)."""
    import os
    import subprocess
    import sys

    ddp = [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *TINY, *CONSTANT, "test=false",
        f"paths.log_dir={tmp_path}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }

    def run(name: str, *overrides: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-m",
            "trainlab.train",
            *ddp,
            f"hydra.run.dir={tmp_path / name}",
            *overrides,
        ]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert run("full").returncode == 0
    interrupted = run(
        "resumed",
        "+callbacks.interrupt._target_=interrupt_callback.InterruptAt",
        "+callbacks.interrupt.step=4",
    )
    assert interrupted.returncode != 0
    assert (
        torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    )
    resumed = run("resumed", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "order starts again" not in resumed.stdout + resumed.stderr
    full, again = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    assert all(torch.equal(full[key], again[key]) for key in full)
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("full", "resumed")]
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == 6
    assert summaries[0]["metrics"]["val/acc"] == summaries[1]["metrics"]["val/acc"]
