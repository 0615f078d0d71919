"""The paths a checkpoint carries are data: a resume deletes, reads and writes nothing outside the
run because its `last.ckpt` names a file there (trainlab.checkpoints.confined_paths)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from trainlab.checkpoints.confined_paths import (
    confine_callback_states,
    confine_model_checkpoint_state,
    confine_state_paths,
    inside,
)
from trainlab.train import train

from conftest import QUIET, compose_config

TINY = [
    *QUIET,
    "data=digits",
    "data.train_size=64",
    "model=mlp",
    "model.depth=1",
    "model.width=8",
    "logger=csv",
    "test=false",
    "callbacks.layer_stats=null",
    "callbacks.augment_preview=null",
]


def escaping_state(state: dict, victim: str) -> None:
    """A ModelCheckpoint state that names `victim` as its best, k-th best, last and only top-k
    file, with the worst possible score, so that the next checkpoint replaces (deletes) it."""
    state.update(
        best_model_path=victim,
        kth_best_model_path=victim,
        last_model_path=victim,
        best_k_models={victim: torch.tensor(float("-inf"))},
        best_model_score=torch.tensor(float("-inf")),
        kth_value=torch.tensor(float("-inf")),
    )


@pytest.mark.slow
def test_a_crafted_last_ckpt_deletes_nothing_outside_the_run(tmp_path, caplog):
    run = tmp_path / "logs" / "run"
    train(compose_config([*TINY, "trainer.max_epochs=1"], run, log_dir=tmp_path))
    victim, linked = tmp_path / "victim.txt", tmp_path / "elsewhere" / "linked.ckpt"
    victim.write_text("keep me")
    linked.parent.mkdir()
    linked.write_text("keep me too")
    checkpoints = run / "checkpoints"
    # a linked directory (a run refuses linked files: trainlab.run.directory), whose file a
    # lexical test would take for one of the run's
    (checkpoints / "scratch").symlink_to(linked.parent)
    lexical = f"{checkpoints}/../../../victim.txt"  # inside checkpoints/ for a lexical test
    assert Path(lexical).resolve() == victim.resolve()

    last = checkpoints / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    states = [
        state for key, state in checkpoint["callbacks"].items() if str(key).startswith("ModelCheckpoint")
    ]
    assert len(states) == 2  # the best checkpoint (val/acc) and last.ckpt
    escaping_state(states[0], lexical)
    escaping_state(states[1], str(checkpoints / "scratch" / "linked.ckpt"))
    torch.save(checkpoint, last)

    with caplog.at_level(logging.WARNING, logger="trainlab.checkpoints.confined_paths"):
        summary = train(
            compose_config([*TINY, "trainer.max_epochs=2", "ckpt_path=last"], run, log_dir=tmp_path)
        )
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert victim.read_text() == "keep me"
    assert linked.read_text() == "keep me too"
    dropped = " ".join(r.getMessage() for r in caplog.records)
    assert "victim.txt" in dropped and "linked.ckpt" in dropped and "dropped" in dropped
    # what the resumed run keeps and tests are its own files
    best = summary["best_checkpoint"]
    assert best and inside(best, checkpoints) and Path(best).resolve().parent == checkpoints.resolve()


def test_paths_are_resolved_with_symlinks_followed(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    (root / "link.ckpt").symlink_to(tmp_path / "elsewhere.ckpt")
    (tmp_path / "outside").symlink_to(root)  # a link into the run from outside is inside
    assert inside(root / "epoch000.ckpt", root)
    assert inside(str(tmp_path / "outside" / "last.ckpt"), root)
    assert not inside(f"{root}/../../victim.txt", root)
    assert not inside(root / "link.ckpt", root)
    assert not inside("s3://bucket/run/checkpoints/last.ckpt", root)
    assert inside("s3://bucket/run/checkpoints/last.ckpt", "s3://bucket/run/checkpoints")
    assert not inside("s3://bucket/run/checkpoints/../x", "s3://bucket/run/checkpoints")
    assert not inside("", root) and not inside(None, root)


def test_a_model_checkpoint_state_keeps_its_own_files_and_stays_consistent(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    good, better, outside = str(root / "a.ckpt"), str(root / "b.ckpt"), str(tmp_path / "victim.txt")
    state = {
        "dirpath": str(root),
        "best_k_models": {good: torch.tensor(0.5), better: torch.tensor(0.7), outside: torch.tensor(0.9)},
        "best_model_path": outside,
        "best_model_score": torch.tensor(0.9),
        "kth_best_model_path": good,
        "kth_value": torch.tensor(0.5),
        "last_model_path": outside,
    }
    dropped = confine_model_checkpoint_state(state, root, mode="max", warn=lambda text: None)
    assert len(dropped) == 3  # the best-k entry, the best and the last
    assert set(state["best_k_models"]) == {good, better}
    assert state["best_model_path"] == better and float(state["best_model_score"]) == pytest.approx(0.7)
    assert state["kth_best_model_path"] == good and state["last_model_path"] == ""
    assert state["dirpath"] == str(root)

    foreign = {"dirpath": "/elsewhere", "best_model_path": "/elsewhere/x.ckpt", "best_k_models": {}}
    confine_model_checkpoint_state(foreign, root, mode="max", warn=lambda text: None)
    assert (
        "dirpath" not in foreign and foreign["best_model_path"] == "" and foreign["best_model_score"] is None
    )


def test_other_callbacks_states_keep_only_paths_inside_the_run(tmp_path):
    state = {
        "saved_path": str(tmp_path / "elsewhere" / "x.ckpt"),
        "nested": {"output_dir": str(tmp_path / "run" / "plots"), "log_file": "/etc/passwd"},
        "files": [str(tmp_path / "run" / "a"), "/tmp/b"],
        "steps": 3,
    }
    confine_state_paths(state, tmp_path / "run", "SWA", warn=lambda text: None)
    assert state == {
        "saved_path": None,
        "nested": {"output_dir": str(tmp_path / "run" / "plots"), "log_file": None},
        "files": [str(tmp_path / "run" / "a")],
        "steps": 3,
    }


def test_each_model_checkpoint_state_is_confined_to_its_own_callbacks_directory(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path / "run" / "checkpoints", monitor="val/acc", mode="max")
    outside = str(tmp_path / "run" / "victim.ckpt")  # in the run, but not in the callback's directory
    checkpoint = {
        "callbacks": {
            callback.state_key: {"best_model_path": outside, "best_k_models": {outside: torch.tensor(1.0)}},
            "Other": {"path": outside},
        }
    }
    dropped = confine_callback_states(checkpoint, [callback], tmp_path / "run")
    assert checkpoint["callbacks"][callback.state_key]["best_model_path"] == ""
    assert checkpoint["callbacks"]["Other"] == {"path": outside}  # inside the run directory
    assert len(dropped) == 2
