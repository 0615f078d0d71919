"""Workers keep their last batches, so that they, not the training process, free the batches'
shared memory (trainlab.data.worker_batches); the batches themselves are those of a loader
without workers, bit for bit."""

from __future__ import annotations

import gc
import pickle
import threading
import time

import pytest
import torch
from torch.utils.data import default_collate

import trainlab.data.worker_batches as worker_batches
from trainlab.data.datamodule import ImageDataModule
from trainlab.data.worker_batches import KEEP, PREFETCH_FACTOR, WorkerKeepsBatches

SAMPLES = [[(torch.full((2, 3), float(b * 10 + i)), b) for i in range(4)] for b in range(6)]


def test_a_worker_keeps_its_last_batches_and_lets_the_oldest_go(monkeypatch):
    monkeypatch.setattr(worker_batches, "get_worker_info", lambda: object())  # as in a worker
    collate = WorkerKeepsBatches(keep=3)
    batches = [collate(samples) for samples in SAMPLES]
    for batch, samples in zip(batches, SAMPLES, strict=True):
        expected = default_collate(samples)
        assert torch.equal(batch[0], expected[0]) and torch.equal(batch[1], expected[1])
    assert [id(kept) for kept in collate._kept] == [id(batch) for batch in batches[-3:]]


def test_an_idle_worker_lets_its_kept_batches_go_and_the_thread_ends_with_the_collate(monkeypatch):
    """No new batch for `idle_s` (an idle persistent worker): the kept batches are dropped, so
    idle workers hold no shared memory; the worker's thread ends with its WorkerKeepsBatches."""
    monkeypatch.setattr(worker_batches, "get_worker_info", lambda: object())

    def idle_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "let-go-when-idle"}

    before = idle_threads()
    collate = WorkerKeepsBatches(keep=3, idle_s=1.0)
    collate(SAMPLES[0])
    collate(SAMPLES[1])
    [thread] = idle_threads() - before
    assert len(collate._kept) == 2
    deadline = time.monotonic() + 5
    while collate._kept and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(collate._kept) == 0
    collate(SAMPLES[2])  # working again: kept again, under the same thread's watch
    assert idle_threads() - before == {thread}
    del collate
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_training_process_itself_keeps_nothing():
    collate = WorkerKeepsBatches()
    collate(SAMPLES[0])
    assert collate._kept is None


def test_a_spawned_worker_gets_none_of_the_kept_batches(monkeypatch):
    monkeypatch.setattr(worker_batches, "get_worker_info", lambda: object())
    collate = WorkerKeepsBatches(keep=2)
    collate(SAMPLES[0])
    copy = pickle.loads(pickle.dumps(collate))
    assert copy._kept is None and copy.keep == 2 and len(collate._kept) == 1


def test_keep_must_be_at_least_one():
    with pytest.raises(ValueError, match="keep at least 1"):
        WorkerKeepsBatches(keep=0)


def test_loaders_with_workers_keep_batches_and_give_the_batches_of_a_loader_without():
    """The DataModule's loaders with 2 workers collate with WorkerKeepsBatches (one batch more
    than each worker's prefetch), and give the same batches, with the same random augmentations,
    as with none, over two epochs."""

    def epochs_of_batches(workers: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        dm = ImageDataModule(
            source={"_target_": "trainlab.data.sources.digits"},
            batch_size=100,
            num_workers=workers,
            augment={
                "name": "flips",
                "transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}],
            },
        )
        dm.prepare_data()
        dm.setup("fit")
        dm.set_data_seed(7)
        loader = dm.train_dataloader()
        if workers:
            assert isinstance(loader.collate_fn, WorkerKeepsBatches) and loader.collate_fn.keep == KEEP
            assert loader.prefetch_factor == PREFETCH_FACTOR and KEEP == PREFETCH_FACTOR + 1
            assert isinstance(dm.val_dataloader().collate_fn, WorkerKeepsBatches)
        epochs = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            epochs.append([(images.clone(), labels.clone()) for images, labels in loader])
        return epochs

    without, with_workers = epochs_of_batches(0), epochs_of_batches(2)
    assert len(without) == len(with_workers) == 2
    for epoch_without, epoch_with in zip(without, with_workers, strict=True):
        assert len(epoch_without) == len(epoch_with) > 2
        for (images, labels), (images_w, labels_w) in zip(epoch_without, epoch_with, strict=True):
            assert torch.equal(images, images_w) and torch.equal(labels, labels_w)
    assert not torch.equal(without[0][0][0], without[1][0][0])  # each epoch its own order and flips
