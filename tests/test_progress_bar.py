"""The default progress bar reads the metrics (a host sync each on GPU) only when it redraws;
removing it leaves no bar (not Lightning's default bar)."""

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


def test_metrics_are_read_refresh_rate_times_a_second_and_fresh_at_epoch_end(monkeypatch, tmp_path):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock.now)
    reads_in_batches = []
    read = RichProgressBar.get_metrics

    def counting_read(self, trainer, pl_module):
        if self._in_train_batch_end:
            reads_in_batches.append(clock.now)
        return read(self, trainer, pl_module)

    monkeypatch.setattr(RichProgressBar, "get_metrics", counting_read)
    bar = ThrottledRichProgressBar(refresh_rate=1)
    data = DataLoader(TensorDataset(torch.randn(BATCHES, 2)), batch_size=1)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[clock, bar],
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Counting(), data)

    # 20 batches over 5 (fake) seconds: a read at the first batch, then one a second, i.e. at
    # batches 1, 5, 9, 13, 17 instead of all 20
    assert reads_in_batches == [0.25, 1.25, 2.25, 3.25, 4.25]
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


def test_the_bar_stops_without_sleeping_out_its_redraw_interval(monkeypatch, tmp_path):
    """Lightning's redraw thread sleeps a whole interval before it sees that it was stopped, and the
    bar waits for it at the end of every stage (fit, test). The bar's own thread ends at once: here
    the interval is 1,000 s, so a thread that slept it out would keep fit waiting."""
    threads = []
    stop = progress._PromptRefreshThread.stop

    def recorded_stop(thread):
        threads.append(thread)
        stop(thread)

    monkeypatch.setattr(progress._PromptRefreshThread, "stop", recorded_stop)
    bar = ThrottledRichProgressBar(refresh_rate=0.001)  # one redraw per 1,000 s
    data = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=1)
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[bar], logger=False, enable_checkpointing=False, default_root_dir=tmp_path
    )
    trainer.fit(Counting(), data)

    assert threads, "the bar drew with its own redraw thread"
    for thread in threads:
        assert thread.refresh_per_second == 0.001
        assert not thread.is_alive()  # joined by the bar's stop, which returned
