"""The training split's order: a shuffle drawn from (seed, epoch), so that a resumed run sees the
batches the uninterrupted run would have seen, from the batch where it stopped.

torch's `RandomSampler` draws each epoch's shuffle from the global torch generator, whose state
at an epoch's start depends on everything the run drew before; a resumed run cannot redraw it.
Here the shuffle of epoch e is a function of (seed, e) alone, Lightning tells the sampler the
epoch (`set_epoch`, as for a DistributedSampler) and the DataModule tells it where a resumed epoch
starts (`start`).

With several processes (DDP), `ShardedEpochSampler` gives each process its share of that order,
the share Lightning's DistributedSamplerWrapper gave it, and a resumed epoch goes on in every
process where it stopped. (The wrapper itself cannot start mid-epoch: it indexes a list as long
as the sampler's full length.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

if TYPE_CHECKING:
    import lightning.pytorch as pl


class SampleKey(NamedTuple):
    """What the sampler yields: the example's index and the epoch, so that the dataset can seed
    the example's augmentation from them (trainlab.data.pipelines.ArrayDataset)."""

    epoch: int
    index: int


def mixed_seed(*entropy: int) -> int:
    """A 63-bit seed that depends on every value in `entropy` (numpy's SeedSequence mixing)."""
    state = np.random.SeedSequence([int(e) % 2**64 for e in entropy]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class EpochSampler(Sampler[SampleKey]):
    """Every example once per epoch, in the order `randperm` draws from (seed, epoch).

    Args:
        num_samples: size of the dataset.
        seed: the run's data seed.
        epoch: the epoch of the next iteration (Lightning's `set_epoch` updates it).
        start: skip this many examples of the next iteration only (a resumed epoch); the
            iterations after it start at the beginning of their epoch.
    """

    def __init__(self, num_samples: int, seed: int, epoch: int = 0, start: int = 0) -> None:
        self.num_samples, self.seed, self.epoch, self.start = num_samples, seed, epoch, start

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, start = self.epoch, self.start
        self.start = 0
        return (SampleKey(epoch, index) for index in self.order(epoch)[start:].tolist())

    def __len__(self) -> int:
        # the full epoch: Lightning counts a resumed epoch's batches from its own progress
        return self.num_samples


class ShardedEpochSampler(DistributedSampler):
    """Process `rank`'s share of EpochSampler's order of (seed, epoch), as Lightning's
    DistributedSamplerWrapper shares it out (so that DDP runs keep their data order): torch's
    DistributedSampler over the order's positions, shuffled by (`shuffle_seed`, epoch) and
    padded to a multiple of `num_replicas`, every `num_replicas`-th from `rank`. Lightning
    leaves a DistributedSampler in place instead of wrapping it.

    Args:
        start: skip this many examples of the share in the next iteration only (a resumed
            epoch: the batches trained so far times the batch size).
        shuffle_seed: the run's seed, as Lightning gives its wrapper (PL_GLOBAL_SEED).
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        num_replicas: int,
        rank: int,
        epoch: int = 0,
        start: int = 0,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__(
            range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=shuffle_seed
        )
        self.order_of = EpochSampler(num_samples, seed)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, start = self.epoch, self.start
        self.start = 0
        order = self.order_of.order(epoch).tolist()
        return (SampleKey(epoch, order[position]) for position in list(super().__iter__())[start:])


def resume_position(trainer: pl.Trainer) -> tuple[int, int]:
    """(epoch, batches of it already trained) where a run resumed from a checkpoint saved now
    goes on: Lightning's own progress counters, read as its fit loop reads them on restart.

    A batch counts once its optimizer step is done (`processed`): a checkpoint written while a
    step runs (an interrupt) resumes with that batch; one written at an epoch's end resumes at
    the start of the next epoch.
    """
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    epoch = trainer.current_epoch
    if batches >= trainer.num_training_batches:
        return epoch + 1, 0
    return epoch, batches
