"""The LightningModule every study trains: a network, cross-entropy, accuracy, optimizer, schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from trainlab.models.factory import build_network
from trainlab.models.rebuildable import RebuildableModule
from trainlab.utils.config import plain


class Classifier(RebuildableModule):
    """Image classification with any network the config composes.

    Args:
        network: arguments of `build_network` (model, norm, activation configs, input shape,
            number of classes): plain data, so that checkpoints rebuild the same network.
        optimizer: a partial optimizer config (`_target_`, `_partial_: true`, lr, ...).
        scheduler: a partial schedule config called with (optimizer, total_steps), or None.
    """

    # What this module logs, i.e. what a callback's `monitor` may name (checked before training).
    LOGGED_METRICS = (
        "train/loss",
        "train/loss_step",
        "train/loss_epoch",
        "train/acc",
        "val/loss",
        "val/acc",
        "test/loss",
        "test/acc",
    )

    def __init__(self, network: Mapping, optimizer: Mapping, scheduler: Mapping | None = None) -> None:
        super().__init__()
        # logger=False: the training script logs the whole resolved config itself, flattened.
        self.save_hyperparameters(
            {
                "network": plain(network),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler) or None,
            },
            logger=False,
        )
        self.net = build_network(**self.hparams.network)  # the architecture only: no pretrained weights
        # set by a transfer policy before the optimizer is built (see parameter_groups)
        self.param_group_plan: list[dict[str, Any]] | None = None
        num_classes = self.hparams.network["num_classes"]
        # average="micro": plain accuracy (torchmetrics' multiclass default is macro).
        # validate_args=False: the checks scan the targets every step (a host sync); the
        # labels come from our own DataModule, already checked.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        # the epoch's mean training loss, weighted by batch size ("disable": no NaN check, which
        # would read the loss back to the host every step; a NaN loss gives a NaN mean)
        self.train_loss = MeanMetric(nan_strategy="disable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        # update() only: the epoch's accuracy is logged at epoch end (_log_epoch); calling the
        # metric would also compute each batch's own accuracy, and a Metric object passed to
        # self.log every step costs Lightning a walk over its state.
        getattr(self, f"{stage}_acc").update(logits, labels)
        if stage != "train":
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True)
            return loss
        # one copy of the batch's mean loss per example: the batch-size weighting (weight= is
        # dropped under nan_strategy="disable", torchmetrics issue #3434)
        self.train_loss.update(loss.detach().expand(labels.numel()))
        # self.log costs ~0.5 ms of Python per call (Lightning copies its result object's state),
        # 1% of a CPU step of the default CNN (scripts/bench/overhead.py): the step loss is logged
        # only on the steps whose metrics go to the loggers (trainer.log_every_n_steps; the
        # property Lightning's own LearningRateMonitor asks).
        if self.trainer._logger_connector.should_update_logs:
            self.log("train/loss_step", loss, prog_bar=True)
            self.log("train/loss", loss, logger=False)  # for callbacks that monitor train/loss
        return loss

    def _log_epoch(self, stage: str) -> None:
        accuracy = getattr(self, f"{stage}_acc")
        if accuracy.update_count:  # an epoch with batches (not e.g. limit_val_batches=0)
            self.log(f"{stage}/acc", accuracy.compute(), prog_bar=True)
        accuracy.reset()
        if stage == "train" and self.train_loss.update_count:
            mean = self.train_loss.compute()
            # the names Lightning gives a metric logged on_step and on_epoch: loggers get
            # train/loss_step and train/loss_epoch, callbacks and summary.json train/loss
            self.log("train/loss_epoch", mean, prog_bar=True)
            self.log("train/loss", mean, logger=False)
            self.train_loss.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def parameter_groups(self) -> list[dict[str, Any]] | list[torch.nn.Parameter]:
        """What the optimizer receives: by default the trainable parameters, in one group.

        A transfer policy (trainlab.transfer.TransferPolicy) sets `param_group_plan` before the
        optimizer is built: named groups of parameter names, each with an `lr_mult`, the group's
        learning rate relative to the optimizer's `lr` (a head at lr, a backbone at
        lr * transfer.backbone_lr_mult). Parameters in no group are never optimised.
        """
        if not self.param_group_plan:
            return [p for p in self.parameters() if p.requires_grad]
        params = dict(self.named_parameters())
        return [
            {
                **{k: v for k, v in group.items() if k != "params"},
                "params": [params[n] for n in group["params"]],
            }
            for group in self.param_group_plan
        ]

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.parameter_groups())
        for group in optimizer.param_groups:  # before the schedule: it scales each group's own rate
            group["lr"] = group["lr"] * group.get("lr_mult", 1.0)
        if not self.hparams.scheduler:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.hparams.scheduler)(optimizer, total_steps=total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
