"""The test set's confusion matrix and per-class accuracy: files, summary.json and W&B records."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from trainlab import builders
from trainlab.train import train

from conftest import read_summary, wait_for_wandb_exit, wandb_history

TINY = [
    "data=digits",
    "data.classes=[3,8,5]",  # relabelled 0..2: the files must name the classes, not the labels
    "model=mlp",
    "model.depth=1",
    "model.width=8",
    "data.train_size=60",
    "trainer.max_epochs=1",
    "logger=wandb",
    "logger.wandb.system_stats=false",
    "logger.wandb.console=off",
    "callbacks.layer_stats=null",
    "callbacks.augment_preview=null",
]


def _hand_count(cfg, checkpoint: str) -> torch.Tensor:
    """Counts of (true, predicted) over the test set, by the tested checkpoint's own predictions."""
    datamodule = builders.build_datamodule(cfg)
    model, _ = builders.build_model(cfg, datamodule)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    model.eval()
    datamodule.setup("test")
    counts = torch.zeros(3, 3, dtype=torch.long)
    with torch.no_grad():
        for images, labels in datamodule.network_batches("test"):
            for true, predicted in zip(labels.tolist(), model(images).argmax(dim=1).tolist(), strict=True):
                counts[true, predicted] += 1
    return counts


def test_confusion_matrix_and_per_class_accuracy_match_a_hand_count(make_cfg, tmp_path):
    cfg = make_cfg(*TINY)
    summary = train(cfg)
    run_dir = tmp_path / "run"
    counts = _hand_count(cfg, summary["best_checkpoint"])
    names = ["3", "8", "5"]

    rows = list(csv.reader((run_dir / "confusion_matrix.csv").open()))
    assert rows[0][1:] == names and [r[0] for r in rows[1:]] == names
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == counts.tolist()

    per_class = list(csv.DictReader((run_dir / "per_class_acc.csv").open()))
    expected = (counts.diag() / counts.sum(dim=1)).tolist()
    assert [r["class"] for r in per_class] == names
    assert [float(r["accuracy"]) for r in per_class] == pytest.approx(expected)
    assert [int(r["support"]) for r in per_class] == counts.sum(dim=1).tolist()
    assert read_summary(run_dir)["per_class"]["test/acc"] == pytest.approx(
        dict(zip(names, expected, strict=True))
    )
    # the per-class accuracies average, weighted by support, to the logged test accuracy
    assert summary["metrics"]["test/acc"] == pytest.approx(counts.diag().sum().item() / counts.sum().item())

    wait_for_wandb_exit(run_dir)
    logged = {key: value for row in wandb_history(run_dir) for key, value in row.items()}
    assert (
        logged["test/per_class_acc"]["_type"] == "table-file" and logged["test/per_class_acc"]["nrows"] == 3
    )
    chart = logged["test/confusion_matrix_table"]  # W&B's chart: its table of counts
    assert chart["_type"] == "table-file" and chart["nrows"] == 9
    table = json.loads(next(run_dir.glob("wandb/offline-run-*/files/" + chart["path"])).read_text())
    assert table["columns"] == ["Actual", "Predicted", "nPredictions"]
    cells = {(a, p): n for a, p, n in table["data"]}
    assert all(cells[(names[t], names[p])] == counts[t, p] for t in range(3) for p in range(3))
