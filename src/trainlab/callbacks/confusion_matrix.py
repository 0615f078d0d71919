"""Which classes a classifier confuses: the test set's confusion matrix and per-class accuracy.

The study module counts (its `test_confusion`, a torchmetrics MulticlassConfusionMatrix, and
`test_class_acc`, MulticlassAccuracy(average=None)); this callback names the classes (the
DataModule's `class_names`) and reports the counts, so the module stays loss and metrics:

- `<run dir>/confusion_matrix.csv`: a row per true class, a column per predicted class;
- `<run dir>/per_class_acc.csv`: class, accuracy (the fraction of its test images classified
  right), support (its test images);
- summary.json: `per_class: {"test/acc": {<class>: accuracy}}`;
- W&B: the confusion matrix chart `test/confusion_matrix` and the table `test/per_class_acc`.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


class ConfusionMatrix(pl.Callback):
    """After each test: the confusion matrix and per-class accuracy as files, W&B table and chart.

    Args:
        matrix_file, per_class_file: CSV files written in the run directory
            (trainer.default_root_dir).

    A module without `test_confusion` (e.g. a regression) is skipped with a log line.
    """

    def __init__(self, matrix_file: str = "confusion_matrix.csv", per_class_file: str = "per_class_acc.csv"):
        self.matrix_file, self.per_class_file = matrix_file, per_class_file
        self.per_class: dict[str, float] = {}

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        confusion, class_acc = (
            getattr(pl_module, "test_confusion", None),
            getattr(pl_module, "test_class_acc", None),
        )
        if confusion is None or class_acc is None:
            log.info(
                f"ConfusionMatrix: {type(pl_module).__name__} counts no test_confusion; nothing to report."
            )
            return
        if not confusion.update_count:
            return
        # compute() on every process: it gathers the counts of a multi-device test
        counts = confusion.compute().long().cpu()
        accuracy = class_acc.compute().float().cpu()
        if not trainer.is_global_zero:
            return
        names = _class_names(trainer, counts.shape[0])
        self.per_class = {name: float(acc) for name, acc in zip(names, accuracy.tolist(), strict=True)}
        run_dir = Path(trainer.default_root_dir)
        _write_matrix(run_dir / self.matrix_file, counts, names)
        _write_per_class(run_dir / self.per_class_file, accuracy, counts.sum(dim=1), names)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.log(
                    {**_wandb_items(counts, accuracy, names), "trainer/global_step": trainer.global_step}
                )

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        return {"per_class": {"test/acc": self.per_class}} if self.per_class else {}


def _class_names(trainer: pl.Trainer, num_classes: int) -> list[str]:
    names = list(getattr(trainer.datamodule, "class_names", None) or []) if trainer.datamodule else []
    return [str(n) for n in names] if len(names) == num_classes else [str(i) for i in range(num_classes)]


def _write_matrix(path: Path, counts: torch.Tensor, names: list[str]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, counts.tolist(), strict=True))


def _write_per_class(path: Path, accuracy: torch.Tensor, support: torch.Tensor, names: list[str]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "accuracy", "support"])
        writer.writerows(zip(names, accuracy.tolist(), support.tolist(), strict=True))


def _wandb_items(counts: torch.Tensor, accuracy: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """W&B's confusion-matrix chart from the counts (wandb.plot.confusion_matrix wants every
    prediction again; the chart it builds is this table of counts with W&B's own spec)."""
    import wandb

    cells = [
        [names[true], names[predicted], int(counts[true, predicted])]
        for true in range(len(names))
        for predicted in range(len(names))
    ]
    chart = wandb.plot_table(
        "wandb/confusion_matrix/v1",
        wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells),
        {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
        {"title": "Test confusion matrix"},
    )
    per_class = wandb.Table(
        columns=["class", "accuracy", "support"],
        data=[
            [n, float(a), int(s)]
            for n, a, s in zip(names, accuracy.tolist(), counts.sum(dim=1).tolist(), strict=True)
        ],
    )
    return {"test/confusion_matrix": chart, "test/per_class_acc": per_class}
