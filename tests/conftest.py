"""Shared fixtures: compose the real configs with tiny overrides, run the real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from trainlab.utils.compose import compose_run_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "conf"
# Quiet, fast, offline: no progress bars, W&B never online in tests.
QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_model_summary=false"]

# Tiny models run faster on one thread than on two contending ones (CPU machines have 2 cores).
torch.set_num_threads(1)
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train", log_dir: Path | None = None
) -> DictConfig:
    """The config `python -m trainlab.<config_name> <overrides>` would get, run dir = output_dir."""
    return compose_run_config(overrides, output_dir, config_name, log_dir)


@pytest.fixture(autouse=True)
def _clear_hydra():
    """Each test composes its own config: no Hydra state leaks into the next test."""
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _finish_wandb():
    """No W&B run outlives its test: Lightning's WandbLogger joins a run already in progress, so a
    run left open (a test that only builds loggers) would take the next test's records."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg(*overrides, run="run") composes `train` with the overrides into tmp_path/run."""

    def make(*overrides: str, run: str = "run", config_name: str = "train", quiet: bool = True) -> DictConfig:
        extra = QUIET if quiet and config_name == "train" else []
        return compose_config([*extra, *overrides], tmp_path / run, config_name, log_dir=tmp_path)

    return make


def run_cli(module: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` as a user would, in `cwd`; output captured."""
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def full_batch_losses(network, inputs, labels, optimizer, steps: int) -> list[float]:
    """`steps` optimizer steps of cross-entropy on one fixed batch; the loss before each step."""
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _read_wandb_records(run_dir: Path) -> list:
    """The records of the offline W&B runs under `run_dir` (`<run_dir>/wandb/offline-run-*/*.wandb`),
    oldest first: what W&B would show once synced (run: name, group, config; environment: args;
    summary; history).

    wandb 0.31 has no Python reader for these files (its Go core writes them): they are LevelDB
    logs, after a 7-byte header (`:W&B`, magic, version), in 32 KiB blocks of chunks, each with a
    7-byte header (CRC, length, type: full, first, middle or last piece of a Record protobuf)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    records = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        ident, magic, _version = struct.unpack("<4sHB", data[:header])
        assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B run file"
        position, pending = header, b""
        while position + header <= len(data):
            if block - position % block < header:  # a block's tail too short for a chunk header
                position += block - position % block
                continue
            _crc, length, kind = struct.unpack("<IHB", data[position : position + header])
            if kind == 0:  # zeros: the rest of the block is padding
                position += block - position % block
                continue
            chunk = data[position + header : position + header + length]
            position += header + length
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append(record)
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows (`run.log` calls) of the offline W&B runs under `run_dir`, as dicts of
    key -> decoded JSON value (a nested key, e.g. a histogram's `bins`, as a nested dict)."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            place = row
            for key in keys[:-1]:
                place = place.setdefault(key, {})
            place[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def wandb_records(run_dir: Path) -> list:
    """`_read_wandb_records`, once every run under `run_dir` is closed (see wait_for_wandb_exit)."""
    wait_for_wandb_exit(run_dir)
    return _read_wandb_records(run_dir)


def wait_for_wandb_exit(run_dir: Path, timeout: float = 30.0) -> None:
    """Wait until every offline W&B run under `run_dir` has its closing `exit` record: W&B's
    service writes the .wandb file on its own, and can still be writing when wandb.finish has
    returned (a read then misses the last records or meets a half-written one)."""
    import time

    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    runs = len(list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")))
    while True:
        try:
            kinds = [r.WhichOneof("record_type") for r in _read_wandb_records(run_dir)]
            if runs and kinds.count("exit") >= runs:
                return
        except DecodeError:  # a record still being written
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the W&B runs under {run_dir} were not closed within {timeout:g} s")
        time.sleep(0.1)


class StepLogger(Logger):
    """A Lightning logger that keeps every (step, metrics) the trainer logs, in memory."""

    name, version = "memory", 0

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict]] = []

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.records.append((step, dict(metrics)))
