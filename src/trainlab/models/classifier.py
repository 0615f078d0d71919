"""The LightningModule most studies train: a classification loss (conf/loss) and accuracy on a
StudyModule (network, optimizer, parameter groups and schedule), with training batches optionally
mixed (conf/mix: Mixup, CutMix)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from trainlab.models.study_module import StudyModule
from trainlab.utils.config import plain
from trainlab.utils.logging_steps import is_logging_step

# Deferred training-metric updates are applied at the epoch's end, or when this many batches wait
# (a bound on the memory they hold in long epochs).
MAX_DEFERRED_UPDATES = 64


class Classifier(StudyModule):
    """Image classification with any network the config composes.

    Args:
        network, optimizer, scheduler: as for trainlab.models.study_module.StudyModule.
        loss: the loss config (`_target_` + arguments, e.g. torch.nn.CrossEntropyLoss with
            label_smoothing); None: plain cross-entropy. It takes class indices and, from mixing,
            class probabilities alike.
        mix: the config of a batch mixer for training batches (trainlab.models.mixing.BatchMix,
            without num_classes: the network's), or None.
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

    def __init__(
        self,
        network: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        loss: Mapping | None = None,
        mix: Mapping | None = None,
    ) -> None:
        # stored with the other hyperparameters: a checkpoint rebuilds the same loss and mixing
        super().__init__(network, optimizer, scheduler, loss=plain(loss) or None, mix=plain(mix) or None)
        num_classes = self.hparams.network["num_classes"]
        self.criterion = instantiate(self.hparams.loss) if self.hparams.loss else torch.nn.CrossEntropyLoss()
        self.mix = instantiate(self.hparams.mix, num_classes=num_classes) if self.hparams.mix else None
        # average="micro": plain accuracy (torchmetrics' multiclass default is macro).
        # validate_args=False: the checks scan the targets every step (a host sync); the
        # labels come from our own DataModule, already checked.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        # Per class at test time: counts (rows the true class, columns the predicted one) and each
        # class's accuracy (recall). Computed and reported by trainlab.callbacks.confusion_matrix,
        # which knows the class names; reset when a test starts.
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.test_class_acc = MulticlassAccuracy(num_classes, average=None, validate_args=False)
        # the epoch's mean training loss, weighted by batch size ("disable": no NaN check, which
        # would read the loss back to the host every step; a NaN loss gives a NaN mean)
        self.train_loss = MeanMetric(nan_strategy="disable")
        # A training step's metric updates, deferred (see flush_metric_updates): each update of a
        # torchmetrics object costs 40-70 us of Python, as much as the whole training step of a
        # small network on the host; one update over the batches since the last logging step
        # gives the same counts and sums (micro accuracy and the mean are sums over examples).
        # Nothing reads them before the epoch's end (train/acc and train/loss_epoch are epoch
        # metrics), so they wait until then: a logging step costs no update either.
        self._deferred: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        if stage == "train" and self.mix is not None:
            images, labels = self.mix(images, labels)
        logits = self(images)
        loss = self.criterion(logits, labels)
        if labels.is_floating_point():
            # mixed (soft) targets: train accuracy counts a prediction right when it is the class
            # with the largest share of the mixed target
            labels = labels.argmax(dim=1)
        if stage == "train":
            # the predicted classes, not the logits: MulticlassAccuracy takes either (top-1)
            self._deferred.append(
                (logits.detach().argmax(dim=1), labels, loss.detach().expand(labels.numel()))
            )
            # self.log costs ~0.2-0.5 ms of Python per call (Lightning's result collection): the
            # step loss is logged on the logging steps only, which are also the only steps whose
            # values Lightning reads back from the device and sends to the loggers. Not prog_bar:
            # Lightning converts a step's prog_bar values to floats after every batch until the
            # epoch ends (a host sync per step on a GPU); the bar reads train/loss_step itself on
            # logging steps (trainlab.callbacks.progress, its `step_metrics`).
            if is_logging_step(self.trainer):
                self.log("train/loss_step", loss)
                self.log("train/loss", loss, logger=False)  # for callbacks that monitor train/loss
            if len(self._deferred) >= MAX_DEFERRED_UPDATES:
                self.flush_metric_updates()
            return loss
        # update() only: the epoch's accuracy is logged at epoch end (_log_epoch); calling the
        # metric would also compute each batch's own accuracy, and a Metric object passed to
        # self.log every step costs Lightning a walk over its state.
        getattr(self, f"{stage}_acc").update(logits, labels)
        if stage == "test":
            self.test_confusion.update(logits, labels)
            self.test_class_acc.update(logits, labels)
        # sync_dist: the epoch's mean over every process's batches (one all-reduce an epoch)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def flush_metric_updates(self) -> None:
        """Apply the training batches' metric updates deferred since the last flush: accuracy and
        the epoch's mean loss (weighted by batch size: one copy of the batch's mean loss per
        example; weight= is dropped under nan_strategy="disable", torchmetrics issue #3434).
        Called at epoch end, every MAX_DEFERRED_UPDATES batches, and by anything that reads the
        metrics' state in the middle of an epoch (trainlab.callbacks.resume_state). Device ops
        only: no read-back.
        """
        if not self._deferred:
            return
        predicted, labels, losses = (torch.cat(parts) for parts in zip(*self._deferred, strict=True))
        self._deferred.clear()
        self.train_acc.update(predicted, labels)
        self.train_loss.update(losses)

    def _log_epoch(self, stage: str) -> None:
        if stage == "train":
            self.flush_metric_updates()
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

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        self.test_class_acc.reset()

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
