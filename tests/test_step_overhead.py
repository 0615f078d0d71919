"""The per-step path: idle callback hooks skipped (fenced), the logging-step rule, compile modes."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import trainlab.utils.library_patches as idle_hooks  # the fenced patches, Lightning's idle hooks among them
from trainlab.builders import build_callbacks, build_trainer
from trainlab.callbacks.compile_steps import CudaGraphSteps
from trainlab.checks import check_config
from trainlab.utils.config import ConfigError
from trainlab.utils.logging_steps import is_logging_step


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Counts(pl.Callback):
    def __init__(self) -> None:
        self.ends = 0

    def on_train_batch_end(self, *args) -> None:
        self.ends += 1


def test_idle_hooks_are_skipped_and_defined_ones_still_called(tmp_path):
    counts, idle = Counts(), pl.Callback()
    skipped = idle_hooks.skip_idle_hooks([counts, idle])
    assert "Counts.on_train_batch_start" in skipped and "Counts.on_train_batch_end" not in skipped
    assert "Callback.on_before_backward" in skipped and idle.on_before_backward is None
    trainer = pl.Trainer(
        max_steps=5, callbacks=[counts, idle], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=1))
    assert counts.ends == 5


def test_the_fence_calls_every_hook_on_an_unchecked_lightning(monkeypatch):
    import lightning

    monkeypatch.setattr(lightning, "__version__", "3.0.0")
    idle_hooks.dispatch_skips_non_callables.cache_clear()
    try:
        callback = pl.Callback()
        assert idle_hooks.skip_idle_hooks([callback]) == []
        assert callable(callback.on_train_batch_start)
    finally:
        idle_hooks.dispatch_skips_non_callables.cache_clear()


@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_trainer_skips_idle_hooks_unless_switched_off(make_cfg, setting):
    cfg = make_cfg("logger=none", f"skip_idle_callback_hooks={setting}", quiet=False)
    trainer = build_trainer(cfg, build_callbacks(cfg, has_logger=False), loggers=[])
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    assert (checkpoint.on_before_backward is None) == (setting == "true")
    # ModelCheckpoint defines it, idle without every_n_train_steps and train_time_interval
    assert (checkpoint.on_train_batch_end is None) == (setting == "true")
    assert callable(checkpoint.on_validation_end)


def test_hooks_idle_under_a_callbacks_settings_are_skipped_and_others_called():
    idle = [ModelCheckpoint(), LearningRateMonitor(logging_interval="epoch")]
    busy = [
        ModelCheckpoint(every_n_train_steps=5),
        ModelCheckpoint(train_time_interval=__import__("datetime").timedelta(minutes=1)),
        LearningRateMonitor(logging_interval="step"),
        LearningRateMonitor(),
    ]
    skipped = idle_hooks.skip_idle_hooks([*idle, *busy])
    assert idle[0].on_train_batch_end is None and idle[1].on_train_batch_start is None
    assert skipped.count("ModelCheckpoint.on_train_batch_end") == 1
    assert all(callable(c.on_train_batch_end) for c in busy[:2])
    assert all(callable(c.on_train_batch_start) for c in busy[2:])


def test_lightnings_checkpoint_and_lr_monitor_do_nothing_on_batches_under_those_settings(tmp_path):
    """What skipping them relies on (Lightning's behaviour, not trainlab's): under the settings
    above ModelCheckpoint writes nothing after a batch and LearningRateMonitor logs nothing before
    one, with trainlab's skipping off (TRAINLAB_LIBRARY_PATCHES aside, no call is skipped here)."""
    logged = []

    class Logger(pl.loggers.Logger):
        name, version = "spy", 0

        def log_metrics(self, metrics, step=None):
            logged.append(dict(metrics))

        def log_hyperparams(self, *args, **kwargs):
            pass

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=None, save_on_train_epoch_end=True)
    trainer = pl.Trainer(
        max_steps=6, callbacks=[checkpoint, LearningRateMonitor(logging_interval="epoch")],
        logger=Logger(), log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    saved = []
    trainer.save_checkpoint = lambda *args, **kwargs: saved.append(trainer.global_step)
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4))  # 2 steps an epoch
    assert saved == [2, 4, 6]  # at epoch ends only
    assert [m for m in logged if "lr-SGD" in m] == [{"lr-SGD": 0.01}] * 3  # at epoch starts only


def test_logging_steps_follow_lightnings_rule():
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=10, should_stop=False)
    logging = [
        s for s in range(40) if is_logging_step(SimpleNamespace(**{**vars(trainer), "global_step": s}))
    ]
    assert logging == [9, 19, 29, 39]  # the 10th, 20th, ... step, asked before its optimizer step
    assert is_logging_step(SimpleNamespace(global_step=3, log_every_n_steps=10, should_stop=True))
    assert not is_logging_step(SimpleNamespace(global_step=9, log_every_n_steps=0, should_stop=False))


def test_bad_compile_mode_names_the_valid_modes(make_cfg):
    with pytest.raises(ConfigError, match=r"compile_mode='fast'.*default, reduce-overhead, max-autotune"):
        check_config(make_cfg("compile=true", "compile_mode=fast"))


def test_cuda_graph_modes_mark_each_step(make_cfg):
    def marks(*overrides):
        cfg = make_cfg("logger=none", *overrides)
        return any(isinstance(c, CudaGraphSteps) for c in build_callbacks(cfg, has_logger=False))

    assert marks("compile=true", "compile_mode=reduce-overhead")
    assert not marks("compile=true") and not marks("compile=false", "compile_mode=reduce-overhead")
    assert not any(
        isinstance(c, LearningRateMonitor) for c in build_callbacks(make_cfg("logger=none"), False)
    )


def test_the_library_patches_setting_switches_idle_hooks_off(monkeypatch):
    monkeypatch.setenv("TRAINLAB_LIBRARY_PATCHES", "0")
    callback = pl.Callback()
    assert idle_hooks.skip_idle_hooks([callback]) == []
    assert callable(callback.on_train_batch_start)
    monkeypatch.setenv("TRAINLAB_LIBRARY_PATCHES", "lightning_idle_hooks")
    assert "Callback.on_train_batch_start" in idle_hooks.skip_idle_hooks([pl.Callback()])
