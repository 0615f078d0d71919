"""The default progress bar reads the metrics (a host sync each on GPU) only on logging steps and
redraws a few times a second; removing it leaves no bar (not Lightning's default bar)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

import trainlab.callbacks.progress as progress
from trainlab.builders import build_callbacks, build_trainer
from trainlab.callbacks.progress import ThrottledRichProgressBar

BATCHES = 20
SECONDS_PER_BATCH = 0.25  # exact in binary: a read every 4 batches, not 3 or 5


class Counting(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        self.log("seen", float(batch_idx), on_step=True, on_epoch=False, prog_bar=True)
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Clock(pl.Callback):
    """A fake clock for the bar: each training batch takes SECONDS_PER_BATCH."""

    def __init__(self) -> None:
        self.now = 0.0

    def on_train_batch_start(self, *args) -> None:
        self.now += SECONDS_PER_BATCH


def test_metrics_are_read_on_logging_steps_redraws_throttled_and_fresh_at_epoch_end(monkeypatch, tmp_path):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock.now)
    reads_in_batches, redraws = [], []
    read, refresh = RichProgressBar.get_metrics, RichProgressBar.refresh

    def counting_read(self, trainer, pl_module):
        if self._in_train_batch_end:
            reads_in_batches.append(trainer.global_step)
        return read(self, trainer, pl_module)

    def counting_refresh(self, hard=False):
        redraws.append(clock.now)
        return refresh(self, hard)

    monkeypatch.setattr(RichProgressBar, "get_metrics", counting_read)
    monkeypatch.setattr(RichProgressBar, "refresh", counting_refresh)
    bar = ThrottledRichProgressBar(redraws_per_second=1)
    data = DataLoader(TensorDataset(torch.randn(BATCHES, 2)), batch_size=1)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[clock, bar],
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        log_every_n_steps=5,
    )
    trainer.fit(Counting(), data)

    # read after the optimizer steps of the logging steps (the 5th, 10th, ... of 20), never between
    assert reads_in_batches == [5, 10, 15, 20]
    # 20 batches over 5 (fake) seconds: about one redraw asked for a second, not one a batch
    assert 4 <= len([t for t in redraws if t <= BATCHES * SECONDS_PER_BATCH]) <= 7
    # the epoch-end read is not throttled: the bar is left showing the last batch's value
    assert bar._metrics["seen"] == BATCHES - 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], ThrottledRichProgressBar),
        # removing the configured bar means no bar, not Lightning's default one (redrawn up to
        # 100 times a second, i.e. after every batch of a small model)
        (["callbacks.rich_progress_bar=null"], None),
        (["callbacks=none"], None),
        (["callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=true"], RichProgressBar),
    ],
)
def test_the_trainer_draws_the_configured_bar_or_none(make_cfg, overrides, expected):
    cfg = make_cfg("logger=none", *overrides, quiet=False)
    trainer = build_trainer(cfg, build_callbacks(cfg, has_logger=False), loggers=[])
    bar = trainer.progress_bar_callback
    assert (bar is None) if expected is None else (type(bar) is expected)


def test_bad_redraw_rate_names_the_setting():
    with pytest.raises(ValueError, match=r"callbacks\.rich_progress_bar\.redraws_per_second must be > 0"):
        ThrottledRichProgressBar(redraws_per_second=0)
