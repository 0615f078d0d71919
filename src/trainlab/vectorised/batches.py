"""The batches of a vectorised study: one loader whose batch i stacks batch i of every member's own
training loader, and the one normalisation on the device that serves all members.

K jobs that differ only in their seed have K training orders and K augmentation draws, each a
function of (seed, epoch) and (seed, epoch, index) alone (trainlab.data.sampler,
trainlab.data.pipelines). So one process can draw all K from one loader with one set of workers:
its sampler yields, for each position of the epoch, the K members' sample keys at that position
(each from the member's own `EpochSampler`), and its dataset fetches member k's example for key k
through member k's own dataset. The batch is `(images [K, B, C, H, W], labels [K, B])`, where
`[k]` is exactly what `datamodules[k].train_dataloader()` gives as its batch i: the same order,
the same augmentation draw, the same offline copies, the same dtype (uint8, or float32 under
`augment.normalise_on=cpu`), the same last batch (dropped or not). Each example is fetched once,
in the worker that builds its batch; nothing runs K times per batch but the members' own work.
A training set that draws nothing at random (no augmentation, or the offline copies) is read once
into a table, and a batch is one gather from it. (A LightningModule that logs from these batches
gives `self.log` its batch size: Lightning would take the first dimension, K.)

The stacked loader takes every setting from the members' own training loaders (batch size,
drop_last, workers, pin_memory, persistent_workers), and so also their position: after each
member's `load_state_dict` (a resumed run), its first iteration starts at the batch where the
members' epoch stopped, as theirs would. Lightning's `set_epoch` reaches every member's sampler.

Validation and test batches are the same for every member (the split is drawn from `split_seed`,
which members share; no shuffle, no augmentation): `evaluation_loader` checks that and gives one
loader whose batch every member is evaluated on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainlab.data.datamodule import ImageDataModule, TrainLoader
from trainlab.data.pipelines import FIXED_OUTPUT_LIMIT_BYTES
from trainlab.data.sampler import EpochSampler, SampleKey

StackedKey = tuple[SampleKey, ...]
"""One position of the epoch: member k's (epoch, index) at [k]."""


class StackedSampler(Sampler[StackedKey]):
    """The members' own samplers side by side: position p of the epoch yields the K members'
    keys at p. Each member sampler keeps its own order (seed, epoch) and its resume start."""

    def __init__(self, samplers: Sequence[EpochSampler]) -> None:
        self.samplers = list(samplers)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this on the training loader's sampler at every epoch's start."""
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.samplers[0].epoch

    def __iter__(self) -> Iterator[StackedKey]:
        return zip(*(iter(sampler) for sampler in self.samplers), strict=True)

    def __len__(self) -> int:
        return len(self.samplers[0])


class StackedDataset(Dataset):
    """Member k's training dataset answers key k. Members whose datasets are the same data (no
    random augmentation, or the same augmentation seed) share one: `datasets[slots[k]]`.

    With `fixed=True` (the datasets draw nothing at random: no augmentation, or the offline
    copies) each dataset is read once into a table of its examples, and a batch is one gather from
    it (the same tensors as reading the examples one by one, without K * B dataset calls a batch),
    unless the table would take more than FIXED_OUTPUT_LIMIT_BYTES, as ArrayDataset decides.
    """

    def __init__(self, datasets: Sequence[Dataset], slots: Sequence[int], fixed: bool = False) -> None:
        self.datasets, self.slots = list(datasets), list(slots)
        self.size = len(self.datasets[0])  # type: ignore[arg-type]
        self.tables = [self._table(dataset) for dataset in self.datasets] if fixed else None
        if self.tables is not None and any(table is None for table in self.tables):
            self.tables = None
        if self.tables is not None:
            self.datasets = []  # all is in the tables

    def _table(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(images [N, ...], labels [N]) of every example, or None when that is too large."""
        if not self.size:
            return None
        first = dataset[0][0]
        if first.nelement() * first.element_size() * self.size > FIXED_OUTPUT_LIMIT_BYTES:
            return None
        items = [dataset[index] for index in range(self.size)]
        images = torch.stack([image for image, _ in items])
        return images, torch.tensor([label for _, label in items], dtype=torch.int64)

    def __len__(self) -> int:
        return self.size

    def _member_items(self, keys: Sequence[StackedKey]) -> list[list[tuple[torch.Tensor, int]]]:
        """[k][b]: member k's example for keys[b][k]; an example two members share (the same
        dataset and key) is fetched once."""
        fetched: dict[tuple[int, SampleKey], tuple[torch.Tensor, int]] = {}
        items = []
        for k, slot in enumerate(self.slots):
            row = []
            for key in keys:
                found = fetched.get((slot, key[k]))
                if found is None:
                    found = fetched[(slot, key[k])] = self.datasets[slot][key[k]]
                row.append(found)
            items.append(row)
        return items

    def _gathered(self, keys: Sequence[StackedKey]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch from the tables: one gather for members that share a table."""
        index = torch.tensor([[key[k].index for key in keys] for k in range(len(self.slots))])
        if len(self.tables) == 1:  # type: ignore[arg-type]
            images, labels = self.tables[0]  # type: ignore[index]
            return images[index], labels[index]
        parts = [self.tables[slot] for slot in self.slots]  # type: ignore[index]
        return (
            torch.stack([images[index[k]] for k, (images, _) in enumerate(parts)]),
            torch.stack([labels[index[k]] for k, (_, labels) in enumerate(parts)]),
        )

    def __getitems__(self, keys: list[StackedKey]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch (the DataLoader's fetcher calls this with the batch's keys): images
        [K, B, ...] and labels [K, B], stacked as torch's default_collate stacks one member's."""
        if self.tables is not None:
            return self._gathered(keys)
        items = self._member_items(keys)
        images = torch.stack([image for row in items for image, _ in row])
        images = images.view(len(items), len(keys), *images.shape[1:])
        labels = torch.tensor([[label for _, label in row] for row in items], dtype=torch.int64)
        return images, labels

    def __getitem__(self, key: StackedKey) -> tuple[torch.Tensor, torch.Tensor]:
        """One position: images [K, ...] and labels [K]."""
        images, labels = self.__getitems__([key])
        return images[:, 0], labels[:, 0]


def _batch_as_fetched(batch: Any) -> Any:
    """The collate function: `StackedDataset.__getitems__` has stacked the batch already."""
    return batch


class StackedTrainLoader(TrainLoader):
    """The training loader of K members: batch i is `(images [K, B, ...], labels [K, B])`, [k]
    batch i of member k's own training loader. Like `TrainLoader`, its `state_dict` is empty:
    the position of a resumed epoch is the members' DataModules' state (see the module docstring)."""

    @property
    def num_members(self) -> int:
        return len(self.dataset.slots)  # type: ignore[attr-defined]


# --- the members must differ only in their seed ------------------------------------------------


def _first_difference(a: Any, b: Any, where: str) -> str | None:
    """The dotted key of the first place where the plain configs `a` and `b` differ, or None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{where}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str | bytes):
        if isinstance(b, str | bytes) or len(a) != len(b):
            return where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    return None if a == b else where


def _value_at(config: Any, dotted: str) -> Any:
    """The value at a dotted key with [index] parts (as _first_difference writes them)."""
    value = config
    for part in dotted.replace("[", ".[").split(".")[1:]:
        if part.startswith("["):
            index = int(part[1:-1])
            value = value[index] if isinstance(value, Sequence) and index < len(value) else "<missing>"
        else:
            value = value.get(part, "<missing>") if isinstance(value, Mapping) else "<missing>"
    return value


def check_same_data(datamodules: Sequence[ImageDataModule]) -> None:
    """Raise a ValueError naming the first `data.*` key in which a member's DataModule differs from
    member 0's: members may differ only in their seed (the run's, or `data.augment.seed`)."""
    if not datamodules:
        raise ValueError("a vectorised study needs at least one member's DataModule, got none.")
    for k, datamodule in enumerate(datamodules):
        if not isinstance(datamodule, ImageDataModule):
            raise ValueError(
                f"member {k}: {type(datamodule).__name__} is not a trainlab ImageDataModule; "
                "vectorised batches stack ImageDataModules' loaders."
            )
    first = _comparable(datamodules[0])
    for k, datamodule in enumerate(datamodules[1:], start=1):
        other = _comparable(datamodule)
        where = _first_difference(first, other, "data")
        if where is not None:
            raise ValueError(
                f"{where} differs between the members of a vectorised study: member 0 has "
                f"{_value_at(first, where)!r}, member {k} has {_value_at(other, where)!r}. Members "
                "may differ only in their seed; run jobs with other data settings as their own group."
            )


def _comparable(datamodule: ImageDataModule) -> dict[str, Any]:
    """The DataModule's settings (its hyperparameters, and the derived drop_last) without seeds."""
    settings = dict(datamodule.hparams)
    augment = dict(settings.get("augment") or {})
    augment.pop("seed", None)  # augment.seed is a seed: members may differ in it
    settings["augment"] = augment
    settings["drop_last"] = datamodule.drop_last  # data.drop_last, or a last batch of one dropped
    return settings


def _check_same_loaders(loaders: Sequence[DataLoader]) -> None:
    """The members' own training loaders agree in what the stacked loader takes from member 0's."""
    for name in ("batch_size", "drop_last", "num_workers", "pin_memory", "persistent_workers"):
        values = [getattr(loader, name) for loader in loaders]
        if any(value != values[0] for value in values):
            raise ValueError(
                f"the members' training loaders differ in {name}: {values}. Members of a vectorised "
                "study must load their data alike (attach the same trainer to every member's DataModule)."
            )
    sizes = [len(loader.dataset) for loader in loaders]  # type: ignore[arg-type]
    if any(size != sizes[0] for size in sizes):
        raise ValueError(f"the members' training sets differ in size: {sizes} examples.")
    for k, loader in enumerate(loaders):
        if type(loader.sampler) is not EpochSampler:
            raise ValueError(
                f"member {k}'s training loader draws its order with {type(loader.sampler).__name__}: "
                "vectorised batches support one process (EpochSampler), not DDP's sharded order."
            )
    positions = [(loader.sampler.epoch, loader.sampler.start) for loader in loaders]
    if any(position != positions[0] for position in positions):
        raise ValueError(
            "the members' training loaders start at different positions (epoch, example): "
            f"{positions}. Members of a vectorised study resume together, from the same step."
        )


def _dataset_slot_key(datamodule: ImageDataModule) -> int | None:
    """Members with the same key have the same training data: none when there is no random
    augmentation (the resize only), else the augmentation seed (online draws, offline copies)."""
    return datamodule.augment_seed() if datamodule.augment.transforms else None


def _draws_nothing(datamodule: ImageDataModule) -> bool:
    """Whether the training set draws nothing at random, as `ImageDataModule.dataset` decides."""
    return datamodule.augment.offline or not datamodule.augment.transforms


# --- the loaders -------------------------------------------------------------------------------


def stacked_train_loader(datamodules: Sequence[ImageDataModule]) -> StackedTrainLoader:
    """The training loader of K members from their DataModules (set up as for ordinary jobs, each
    with its own data seed: `ImageDataModule.set_data_seed`, and a checkpoint's `load_state_dict`
    to resume). Batch i is `(images [K, B, ...], labels [K, B])`, [k] exactly batch i of
    `datamodules[k].train_dataloader()`; see the module docstring.

    Each member's own training loader is built once here, to take its sampler, dataset and
    settings: as with that loader, the first iteration starts where a member's `load_state_dict`
    left it, and a trainer attached to the members (`datamodule.trainer`) sets their epoch and
    `pin_memory=null`. A ValueError names what differs when the members differ in more than their
    seed.
    """
    check_same_data(datamodules)
    datasets: list[Dataset] = []
    slot_of_key: dict[int | None, int] = {}
    slots, samplers, loaders = [], [], []
    for datamodule in datamodules:
        loader = datamodule.train_dataloader()
        key = _dataset_slot_key(datamodule)
        if key not in slot_of_key:  # members with the same data share one dataset (and its memory)
            slot_of_key[key] = len(datasets)
            datasets.append(loader.dataset)
        slots.append(slot_of_key[key])
        samplers.append(loader.sampler)
        loaders.append(loader)
    _check_same_loaders(loaders)
    first = loaders[0]
    return StackedTrainLoader(
        # without random draws (no augmentation, or the offline copies) a member's dataset is a table
        StackedDataset(datasets, slots, fixed=_draws_nothing(datamodules[0])),
        batch_size=first.batch_size,
        sampler=StackedSampler(samplers),
        drop_last=first.drop_last,
        collate_fn=_batch_as_fetched,
        num_workers=first.num_workers,
        persistent_workers=first.persistent_workers,
        pin_memory=first.pin_memory,
        # member 0's generator seed: the loader draws its workers' base seed from it, never from
        # torch's global generator, so loading leaves the members' random draws as they would be
        generator=torch.Generator().manual_seed(first.generator.initial_seed()),
    )


def evaluation_loader(datamodules: Sequence[ImageDataModule], split: str) -> DataLoader:
    """The validation or test loader every member is evaluated on: member 0's. Its batches are
    every member's own (no shuffle, no augmentation; the split from `data.split_seed`, which
    `check_same_data` requires the members to share); the labels of each member's split are
    compared too."""
    if split not in ("val", "test"):
        raise ValueError(f"split={split!r}: evaluation loaders are 'val' or 'test'.")
    check_same_data(datamodules)
    for datamodule in datamodules:
        datamodule.setup()
    labels = [datamodule.splits[split][1] for datamodule in datamodules]
    for k, member_labels in enumerate(labels[1:], start=1):
        if len(member_labels) != len(labels[0]) or (member_labels != labels[0]).any():
            raise ValueError(f"member {k}'s {split} split holds other examples than member 0's.")
    first = datamodules[0]
    return first.val_dataloader() if split == "val" else first.test_dataloader()


# --- on the device -----------------------------------------------------------------------------


def stacked_network_input(batch: Any, datamodule: ImageDataModule) -> Any:
    """A stacked training batch `(images [K, B, C, H, W], labels [K, B])` on the model's device, with
    its images as each member's `on_after_batch_transfer` makes them: normalised float32. Members
    share the source, hence its mean and std: one normalisation of the whole stack serves all
    (per channel, broadcast over members and examples). Float images (`normalise_on=cpu`) pass."""
    images = batch[0]
    channels = datamodule.input_shape[0]
    if images.dim() != 5 or images.shape[2] != channels:
        raise ValueError(
            f"a stacked batch has images [members, batch, {channels}, height, width]; got shape "
            f"{tuple(images.shape)}."
        )
    return datamodule.on_after_batch_transfer(batch, 0)
