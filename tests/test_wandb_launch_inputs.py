"""A W&B run starts without importing W&B Launch when no Launch job input was staged, and
applies staged inputs as W&B does (trainlab.tracking.wandb_launch_inputs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from wandb.sdk import wandb_run

from trainlab.tracking import wandb_launch_inputs
from trainlab.tracking.wandb_launch_inputs import STAGING_MODULE, skip_launch_inputs_none_staged


@pytest.fixture
def original_method(monkeypatch):
    """Run._detect_and_apply_job_inputs as wandb has it, restored after the test."""
    method = wandb_run.Run.__dict__["_detect_and_apply_job_inputs"]
    original = getattr(method, "__wrapped__", method)
    monkeypatch.setattr(wandb_run.Run, "_detect_and_apply_job_inputs", original)
    return original


def test_a_run_start_imports_launch_only_where_wandb_itself_does(tmp_path):
    """In a fresh process: an offline run started after the wrap leaves W&B Launch unimported;
    with wandb's own method the same start imports it (what the wrap saves)."""
    script = textwrap.dedent(
        f"""
        import sys
        import wandb
        from wandb.sdk import wandb_run
        from trainlab.tracking.wandb_launch_inputs import STAGING_MODULE, skip_launch_inputs_none_staged

        own = wandb_run.Run._detect_and_apply_job_inputs
        skip_launch_inputs_none_staged()
        settings = wandb.Settings(x_disable_stats=True, console="off", silent=True)
        wandb.init(mode="offline", dir={str(tmp_path)!r}, settings=settings).finish()
        print("wrapped:", STAGING_MODULE in sys.modules)
        wandb_run.Run._detect_and_apply_job_inputs = own
        wandb.init(mode="offline", dir={str(tmp_path)!r}, settings=settings).finish()
        print("own:", STAGING_MODULE in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "wrapped: False" in result.stdout
    assert "own: True" in result.stdout


def test_staged_inputs_are_applied_as_wandb_applies_them(original_method, monkeypatch):
    import importlib

    staging = importlib.import_module(STAGING_MODULE)
    applied = []
    monkeypatch.setattr(staging.StagedLaunchInputs, "apply", lambda self, run: applied.append(run))
    skip_launch_inputs_none_staged()
    run = object.__new__(wandb_run.Run)
    wandb_run.Run._detect_and_apply_job_inputs(run)
    assert applied == [run]


def test_nothing_is_imported_or_applied_while_the_staging_module_is_absent(original_method, monkeypatch):
    calls = []
    monkeypatch.setattr(wandb_run.Run, "_detect_and_apply_job_inputs", lambda self: calls.append(self))
    monkeypatch.delitem(sys.modules, STAGING_MODULE, raising=False)
    skip_launch_inputs_none_staged()
    wandb_run.Run._detect_and_apply_job_inputs(object())
    assert calls == []
    assert STAGING_MODULE not in sys.modules


def test_wrapping_twice_wraps_once(original_method):
    skip_launch_inputs_none_staged()
    wrapped = wandb_run.Run._detect_and_apply_job_inputs
    skip_launch_inputs_none_staged()
    assert wandb_run.Run._detect_and_apply_job_inputs is wrapped
    assert wrapped.__wrapped__ is original_method


def test_a_wandb_without_the_method_is_left_alone(monkeypatch, caplog):
    monkeypatch.delattr(wandb_run.Run, "_detect_and_apply_job_inputs")
    with caplog.at_level("DEBUG", logger=wandb_launch_inputs.__name__):
        skip_launch_inputs_none_staged()
    assert not hasattr(wandb_run.Run, "_detect_and_apply_job_inputs")
    assert "left as it is" in caplog.text
