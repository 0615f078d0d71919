"""Vectorised batches: the stacked training loader gives each member exactly its own loader's batches
(order, augmentation draw, offline copies, drop_last, resume position), one normalisation on the
device serves all members, and DataModules that differ in more than their seed are refused."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from trainlab import builders
from trainlab.data.datamodule import ImageDataModule
from trainlab.vectorised import batches
from trainlab.vectorised.batches import (
    StackedTrainLoader,
    evaluation_loader,
    stacked_network_input,
    stacked_train_loader,
)

# Small splits: every test iterates K members' own loaders next to the stacked one
DATA = {
    "digits": ["data=digits", "data.batch_size=64"],  # 1,293 training examples: 20 batches and 13
    "mnist5k": ["data=mnist5k", "data.train_size=600"],  # 600: 9 batches of 64 and one of 24
}
# Members 0 and 7 share a seed (an init study: two schemes, one seed): they get the same batches
SEEDS = {1: [5], 3: [5, 6, 7], 8: [5, 6, 7, 8, 9, 10, 11, 5]}


def members(make_cfg, seeds, *overrides: str, run: str = "run") -> list[ImageDataModule]:
    """One DataModule per seed, built as train.py builds a job's, each with its own data seed."""
    cfg = make_cfg(*overrides, run=run)
    datamodules = []
    for seed in seeds:
        datamodule = builders.build_datamodule(cfg)
        datamodule.set_data_seed(seed)
        datamodules.append(datamodule)
    return datamodules


def own_batches(datamodule: ImageDataModule, epochs) -> dict[int, list]:
    """The member's own training loader's batches in each epoch, as Lightning iterates it."""
    loader = datamodule.train_dataloader()
    batches = {}
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        batches[epoch] = list(loader)
    return batches


def stacked_batches(loader: StackedTrainLoader, epochs) -> dict[int, list]:
    batches = {}
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        batches[epoch] = list(loader)
    return batches


def assert_each_members_own(stacked: list, own: list[list]) -> None:
    """Batch i of the stacked loader holds batch i of member k's own loader at [k], exactly."""
    assert len(stacked) == len(own[0]) > 0
    for i, (images, labels) in enumerate(stacked):
        assert images.shape[0] == labels.shape[0] == len(own)
        for k, member in enumerate(own):
            member_images, member_labels = member[i]
            assert images[k].dtype == member_images.dtype and labels[k].dtype == member_labels.dtype
            assert torch.equal(images[k], member_images), f"batch {i}, member {k}: images"
            assert torch.equal(labels[k], member_labels), f"batch {i}, member {k}: labels"


def check_two_epochs(datamodules: list[ImageDataModule], epochs=(0, 1)) -> dict[int, list]:
    loader = stacked_train_loader(datamodules)
    stacked = stacked_batches(loader, epochs)
    own = [own_batches(datamodule, epochs) for datamodule in datamodules]
    for epoch in epochs:
        assert_each_members_own(stacked[epoch], [member[epoch] for member in own])
    return stacked


@pytest.mark.parametrize("count", sorted(SEEDS))
@pytest.mark.parametrize("augment", ["none", "basic"])
@pytest.mark.parametrize("data", sorted(DATA))
def test_each_member_gets_its_own_batches(make_cfg, data, augment, count):
    datamodules = members(make_cfg, SEEDS[count], *DATA[data], f"augment={augment}")
    stacked = check_two_epochs(datamodules)
    images, labels = stacked[0][0]
    channels, height, width = datamodules[0].input_shape
    assert images.shape == (count, 64, channels, height, width) and images.dtype == torch.uint8
    assert labels.shape == (count, 64) and labels.dtype == torch.int64
    # the last, smaller batch is kept, as the members keep it
    assert stacked[0][-1][0].shape[1] == len(datamodules[0].dataset("train")) % 64
    # each epoch its own order (set_epoch), each seed its own
    assert not torch.equal(stacked[0][0][1], stacked[1][0][1])
    if count > 1:
        assert not torch.equal(labels[0], labels[1])
    if count == 8:  # one seed, one order and one augmentation draw
        assert torch.equal(images[0], images[7]) and torch.equal(labels[0], labels[7])


def test_a_fixed_data_seed_is_the_seed_a_job_runs_with(make_cfg):
    """set_data_seed(s) gives the loader of a job seeded with s (train.py: seed_everything(s))."""
    member = members(make_cfg, [6], *DATA["digits"], "augment=basic")[0]
    pl.seed_everything(6, verbose=False)
    job = builders.build_datamodule(make_cfg(*DATA["digits"], "augment=basic"))
    theirs = own_batches(job, (0, 1))
    pl.seed_everything(0, verbose=False)  # torch's seed moves on; the member's stays
    ours = own_batches(member, (0, 1))
    for epoch in (0, 1):
        assert_each_members_own(
            [(images[None], labels[None]) for images, labels in ours[epoch]], [theirs[epoch]]
        )


def test_members_with_the_same_data_share_one_dataset(make_cfg, tmp_path):
    """Without augmentation the members' training sets are one table, gathered from per batch;
    with online augmentation, one dataset per seed; offline, one table of copies per seed."""
    plain = stacked_train_loader(members(make_cfg, SEEDS[3], *DATA["digits"], "augment=none"))
    augmented = stacked_train_loader(members(make_cfg, SEEDS[8], *DATA["digits"], "augment=basic"))
    offline = stacked_train_loader(
        members(
            make_cfg,
            SEEDS[8],
            *DATA["digits"],
            "augment=basic",
            "augment.mode=offline",
            f"augment.cache_dir={tmp_path / 'cache'}",
        )
    )
    assert plain.num_members == augmented.num_members - 5 == offline.num_members - 5 == 3
    assert len(plain.dataset.tables) == 1 and not plain.dataset.datasets
    assert augmented.dataset.tables is None and len(augmented.dataset.datasets) == 7  # seeds 5 .. 11
    assert len(offline.dataset.tables) == 7


def test_a_fixed_training_set_too_large_for_a_table_is_read_example_by_example(make_cfg, monkeypatch):
    monkeypatch.setattr(batches, "FIXED_OUTPUT_LIMIT_BYTES", 0)
    datamodules = members(make_cfg, SEEDS[3], *DATA["mnist5k"], "augment=none")
    assert stacked_train_loader(datamodules).dataset.tables is None
    check_two_epochs(datamodules)


def test_two_workers(make_cfg):
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=basic", "data.num_workers=2")
    loader = stacked_train_loader(datamodules)
    assert loader.num_workers == 2 and loader.persistent_workers
    check_two_epochs(datamodules)


def test_offline_copies(make_cfg, tmp_path):
    datamodules = members(
        make_cfg,
        SEEDS[3],
        *DATA["digits"],
        "augment=basic",
        "augment.mode=offline",
        f"augment.cache_dir={tmp_path / 'cache'}",
    )
    stacked = check_two_epochs(datamodules)
    examples = sum(batch[1].shape[1] for batch in stacked[0])
    assert examples == datamodules[0].train_examples() == 2 * len(datamodules[0].splits["train"][1])


def test_float_batches_normalised_on_cpu(make_cfg):
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=basic", "augment.normalise_on=cpu")
    stacked = check_two_epochs(datamodules)
    assert stacked[0][0][0].dtype == torch.float32


def test_a_fixed_augmentation_seed_gives_every_member_the_same_draw(make_cfg):
    """augment.seed fixes the draw; the order still follows each member's seed."""
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=basic", "augment.seed=4")
    stacked = check_two_epochs(datamodules)
    assert not torch.equal(stacked[0][0][1][0], stacked[0][0][1][1])


def test_set_epoch_changes_the_order_like_the_members(make_cfg):
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=basic")
    stacked = check_two_epochs(datamodules, epochs=(5, 0))
    assert not torch.equal(stacked[5][0][1], stacked[0][0][1])


class RecordsBatches(pl.LightningModule):
    """Trains nothing; records the labels of each training batch, by epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch[1].clone())
        return self.weight * batch[0].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_sets_the_epoch_of_every_member(make_cfg):
    """A Trainer's fit over the stacked loader: Lightning's set_epoch reaches each member's order."""
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=none")
    module = RecordsBatches()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=stacked_train_loader(datamodules))
    own = [own_batches(datamodule, (0, 1)) for datamodule in datamodules]
    for epoch in (0, 1):
        assert len(module.seen[epoch]) == len(own[0][epoch])
        for labels, *member_batches in zip(module.seen[epoch], *(m[epoch] for m in own), strict=True):
            assert torch.equal(labels, torch.stack([batch[1] for batch in member_batches]))


def resumed(datamodules: list[ImageDataModule], seeds, epoch: int, batches: int) -> None:
    """What Lightning does to each member's DataModule when it resumes from a checkpoint."""
    for datamodule, seed in zip(datamodules, seeds, strict=True):
        datamodule.load_state_dict({"seed": seed, "epoch": epoch, "batches_trained": batches})


def test_a_resumed_epoch_skips_the_batches_the_members_skip(make_cfg):
    seeds = SEEDS[3]
    datamodules = members(make_cfg, seeds, *DATA["digits"], "augment=basic")
    resumed(datamodules, seeds, epoch=1, batches=3)
    loader = stacked_train_loader(datamodules)
    first, after = list(loader), (loader.sampler.set_epoch(2), list(loader))[1]
    resumed(datamodules, seeds, epoch=1, batches=3)  # the members' own loaders, resumed alike
    own = []
    for datamodule in datamodules:
        member_loader = datamodule.train_dataloader()
        own.append((list(member_loader), (member_loader.sampler.set_epoch(2), list(member_loader))[1]))
    assert_each_members_own(first, [member[0] for member in own])
    assert_each_members_own(after, [member[1] for member in own])
    full = -(-len(datamodules[0].dataset("train")) // 64)
    assert len(first) == full - 3 and len(after) == full and len(loader) == full
    # and the resumed epoch is epoch 1 from its fourth batch on
    fresh = stacked_batches(
        stacked_train_loader(members(make_cfg, seeds, *DATA["digits"], "augment=basic")), [1]
    )
    assert_each_members_own(first, [[(b[0][k], b[1][k]) for b in fresh[1][3:]] for k in range(3)])


def test_members_resuming_at_different_positions_are_refused(make_cfg):
    seeds = SEEDS[3]
    datamodules = members(make_cfg, seeds, *DATA["digits"], "augment=none")
    resumed(datamodules[:2], seeds[:2], epoch=1, batches=3)
    with pytest.raises(ValueError, match=r"start at different positions .*\(1, 192\).*\(0, 0\)"):
        stacked_train_loader(datamodules)


@pytest.mark.parametrize("how", ["data.drop_last", "last batch of one"])
def test_drop_last_as_the_members(make_cfg, how):
    overrides = ["data.drop_last=true"] if how == "data.drop_last" else []
    datamodules = members(make_cfg, SEEDS[3], *DATA["mnist5k"], "augment=basic", *overrides)
    if how != "data.drop_last":
        for datamodule in datamodules:
            datamodule.drop_last_of_one()
    stacked = check_two_epochs(datamodules)
    assert len(stacked[0]) == 600 // 64 and all(batch[0].shape[1] == 64 for batch in stacked[0])


def test_a_member_that_drops_its_last_batch_alone_is_refused(make_cfg):
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=none")
    datamodules[2].drop_last_of_one()
    with pytest.raises(ValueError, match=r"data\.drop_last differs .*member 0 has False, member 2 has True"):
        stacked_train_loader(datamodules)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data=mnist5k", r"data\.source\._target_"),
        ("data.batch_size=32", r"data\.batch_size"),
        ("data.num_workers=2", r"data\.num_workers"),
        ("data.train_size=500", r"data\.train_size"),
        ("data.classes=[0,1,2]", r"data\.classes"),
        ("data.split_seed=1", r"data\.split_seed"),
        ("data.pin_memory=true", r"data\.pin_memory"),
        ("augment=basic", r"data\.augment\.name"),
        ("augment.transforms.1.padding=0.25", r"data\.augment\.transforms\[1\]\.padding"),
        ("augment.normalise_on=cpu", r"data\.augment\.normalise_on"),
    ],
)
def test_members_that_differ_in_more_than_their_seed_are_refused(make_cfg, override, key):
    base = "augment=basic" if "transforms" in override else "augment=none"
    first = members(make_cfg, [5], *DATA["digits"], base, run="first")
    other = members(make_cfg, [6], *DATA["digits"], base, override, run="other")
    message = rf"{key} differs between the members of a vectorised study: member 0 has .*, member 1 has "
    with pytest.raises(ValueError, match=message):
        stacked_train_loader(first + other)
    with pytest.raises(ValueError, match=message):
        evaluation_loader(first + other, "val")


def test_no_members_is_refused():
    with pytest.raises(ValueError, match="at least one member"):
        stacked_train_loader([])


def test_pin_memory_and_workers_come_from_the_members(make_cfg):
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "data.pin_memory=true", "data.num_workers=2")
    loader = stacked_train_loader(datamodules)
    own = datamodules[0].train_dataloader()
    assert (loader.pin_memory, loader.num_workers, loader.persistent_workers) == (True, 2, True)
    assert (own.pin_memory, own.num_workers, own.persistent_workers) == (True, 2, True)


@pytest.mark.parametrize("data", sorted(DATA))
def test_one_normalisation_on_the_device_serves_every_member(make_cfg, data):
    datamodules = members(make_cfg, SEEDS[3], *DATA[data], "augment=basic")
    images, labels = next(iter(stacked_train_loader(datamodules)))
    network_images, network_labels = stacked_network_input((images, labels), datamodules[0])
    assert network_images.dtype == torch.float32 and network_images.shape == images.shape
    assert network_labels is labels
    for k, datamodule in enumerate(datamodules):
        own_images, own_labels = next(iter(datamodule.train_dataloader()))
        expected, _ = datamodule.on_after_batch_transfer((own_images, own_labels), 0)
        torch.testing.assert_close(network_images[k], expected, rtol=0, atol=1e-6)


def test_float_batches_pass_the_normalisation_unchanged(make_cfg):
    datamodules = members(make_cfg, SEEDS[3], *DATA["digits"], "augment=basic", "augment.normalise_on=cpu")
    batch = next(iter(stacked_train_loader(datamodules)))
    assert stacked_network_input(batch, datamodules[0])[0] is batch[0]


def test_an_unstacked_batch_is_refused_by_the_normalisation(make_cfg):
    datamodule = members(make_cfg, [5], *DATA["digits"], "augment=none")[0]
    with pytest.raises(ValueError, match=r"\[members, batch, 1, height, width\]; got shape \(64, 1, 8, 8\)"):
        stacked_network_input(next(iter(datamodule.train_dataloader())), datamodule)


@pytest.mark.parametrize("split", ["val", "test"])
def test_every_member_is_evaluated_on_the_same_batches(make_cfg, split):
    datamodules = members(make_cfg, SEEDS[3], *DATA["mnist5k"], "augment=basic")
    shared = list(evaluation_loader(datamodules, split))
    for datamodule in datamodules:
        own = list(datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader())
        assert len(own) == len(shared) > 0
        for (images, labels), (own_images, own_labels) in zip(shared, own, strict=True):
            assert torch.equal(images, own_images) and torch.equal(labels, own_labels)


def test_evaluation_loader_names_its_splits(make_cfg):
    with pytest.raises(ValueError, match=r"split='train': evaluation loaders are 'val' or 'test'"):
        evaluation_loader(members(make_cfg, [5], *DATA["digits"]), "train")
