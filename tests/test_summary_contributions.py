"""Results flow up into summary.json: callbacks offer entries (SummaryContributor), and the build
returns what it did (the init scheme's statistics), with nothing set on the modules."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest

from trainlab import builders
from trainlab.run.summary import RunSummary
from trainlab.train import train

from conftest import read_summary

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv"]


class EpochNote(pl.Callback):
    """A study's own callback: records how many epochs it saw, through `summary_items` only."""

    def __init__(self, tag: str) -> None:
        self.tag, self.epochs = tag, 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs += 1

    def summary_items(self, trainer) -> dict:
        return {"epoch_note": {"tag": self.tag, "epochs_seen": self.epochs}}


def test_a_callback_offers_entries_that_reach_summary_json(make_cfg, tmp_path, monkeypatch):
    from trainlab.models.classifier import Classifier

    seen = []  # the file at each epoch start: what the heartbeat of the epoch before wrote
    monkeypatch.setattr(
        Classifier,
        "on_train_epoch_start",
        lambda self: seen.append(read_summary(tmp_path / "run")),
        raising=False,
    )
    cfg = make_cfg(
        *TINY,
        "trainer.max_epochs=2",
        f"+callbacks.note._target_={__name__}.EpochNote",
        "+callbacks.note.tag=hi",
    )
    summary = train(cfg)
    assert summary["status"] == "completed"
    assert (
        summary["epoch_note"]
        == read_summary(tmp_path / "run")["epoch_note"]
        == {"tag": "hi", "epochs_seen": 2}
    )
    assert "epoch_note" not in seen[0] and seen[1]["epoch_note"] == {"tag": "hi", "epochs_seen": 1}


class Offers(pl.Callback):
    def __init__(self, items=None, error: Exception | None = None) -> None:
        self.items, self.error = items, error

    def summary_items(self, trainer) -> dict:
        if self.error is not None:
            raise self.error
        return self.items


def test_an_offered_outcome_replaces_completed_but_not_failed(tmp_path):
    diverged = Offers({"status": "diverged", "error": "loss is nan", "diverged_at_step": 7})
    trainer = SimpleNamespace(callbacks=[pl.Callback(), Offers(error=RuntimeError("broken")), diverged])
    summary = RunSummary(tmp_path, seed=0, overrides=[])
    summary.data["status"] = "completed"
    summary.collect(trainer)  # the broken contributor is logged and left out
    assert (summary.data["status"], summary.data["error"], summary.data["diverged_at_step"]) == (
        "diverged",
        "loss is nan",
        7,
    )
    summary = RunSummary(tmp_path, seed=0, overrides=[])
    summary.data.update(status="failed", error="RuntimeError: out of memory")
    summary.collect(trainer)  # how the process ended says more; the other entries are kept
    assert (summary.data["status"], summary.data["error"], summary.data["diverged_at_step"]) == (
        "failed",
        "RuntimeError: out of memory",
        7,
    )


def test_lsuv_init_stats_flow_up_from_the_build_to_summary_and_loggers(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "init=lsuv", "trainer.max_epochs=1")
    model, built = builders.build_model(cfg, builders.build_datamodule(cfg))
    assert not hasattr(model.net, "init_stats")  # returned, not set on the network
    variances = {k: v for k, v in built.init.items() if k.endswith("/output_var")}
    assert len(variances) == 2 and all(v == pytest.approx(1, abs=0.1) for v in variances.values())
    assert built.summary_items() == {"init_stats": built.init}

    summary = train(cfg)
    assert read_summary(tmp_path / "run")["init_stats"] == summary["init_stats"]
    assert summary["init_stats"].keys() == built.init.keys()
    with open(tmp_path / "run" / "csv" / "metrics.csv") as file:
        logged = next(row for row in csv.DictReader(file) if row.get("init/head/output_var"))
    assert float(logged["init/head/output_var"]) == pytest.approx(summary["init_stats"]["head/output_var"])
