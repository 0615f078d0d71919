"""The LightningModule of a vectorised group: K Classifiers of one architecture trained as one.

The members' networks are stacked into one (trainlab.vectorised.stacked.StackedNetwork), trained
on batches that stack each member's own training batch, and evaluated on the shared validation and
test batches. What each member's Classifier would log is logged under the member's prefix
(`member3/val/acc`); trainlab.vectorised.members hands each member's metrics to its own loggers,
summary and checkpoints, under the Classifier's names.

The metrics are the Classifier's, computed from sums on the device: accuracy (micro: correct over
seen) and the epoch's mean loss weighted by batch size, as torchmetrics' MulticlassAccuracy and
MeanMetric and Lightning's epoch mean compute them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate

from trainlab.models.classifier import Classifier
from trainlab.utils.logging_steps import is_logging_step
from trainlab.vectorised.losses import member_cross_entropy
from trainlab.vectorised.optimizers import stacked_optimizer
from trainlab.vectorised.stacked import StackedNetwork

STAGES = ("train", "val", "test")


def member_prefix(k: int) -> str:
    """Where member k's metrics are logged in the group: `member{k}/`."""
    return f"member{k}/"


class VectorisedClassifier(pl.LightningModule):
    """Members' Classifiers (built and initialised as ordinary jobs build theirs) as one module.

    Args:
        members: the members' Classifiers; their networks are copied into the stack, and each
            member's Classifier receives its weights back when its checkpoint is written
            (`member_module`).
        normalise: the data's conversion of uint8 batches to the network's input (the members
            share one source, so one conversion serves all), or None.
        exact: each member's own bits (True), one batched kernel per layer and update (False),
            or None: exact on the CPU, fast on a GPU (trainlab.vectorised.stacked).
    """

    def __init__(
        self, members: Sequence[Classifier], normalise: Callable | None = None, exact: bool | None = None
    ) -> None:
        super().__init__()
        self._members = list(members)  # not submodules: their networks live on in the stack
        self.exact = exact
        self.network = StackedNetwork([m.net for m in self._members], exact=exact)
        self.num_members = len(self._members)
        smoothing = [float((m.hparams.loss or {}).get("label_smoothing", 0.0)) for m in self._members]
        self.register_buffer("label_smoothing", torch.tensor(smoothing), persistent=False)
        # members that still train: a member that diverged stops counting (its updates frozen)
        self.register_buffer("active", torch.ones(self.num_members, dtype=torch.bool), persistent=False)
        self._normalise = normalise
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self.last_losses: torch.Tensor | None = None  # the last training step's [K] losses

    # --- members ---------------------------------------------------------------------------
    def member_module(self, k: int) -> Classifier:
        """Member k's Classifier with the stack's current weights of member k."""
        member = self._members[k]
        member.net.load_state_dict(self.network.member_state_dict(k))
        return member

    def load_member_weights(self, k: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Member k's network weights (`net.` keys of a checkpoint's state_dict) into the stack."""
        prefix = "net."
        self.network.load_member_state_dict(
            k, {name[len(prefix) :]: value for name, value in state_dict.items() if name.startswith(prefix)}
        )

    def deactivate(self, k: int) -> None:
        """Member k stops training: its parameters and optimizer state keep their values."""
        self.active[k] = False
        self.optimizers(use_pl_optimizer=False).freeze_member(k)  # called during the fit only

    # --- data ------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self._normalise is None:
            return batch
        images, *rest = batch
        return [self._normalise(images), *rest]

    # --- steps -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch  # [K, B, ...], [K, B]
        logits = self.network(images)
        losses = member_cross_entropy(logits, labels, self.label_smoothing)
        self._accumulate("train", logits.detach(), labels, losses.detach())
        self.last_losses = losses.detach()
        if is_logging_step(self.trainer):
            self._log_members({"train/loss_step": losses.detach()})
        # a frozen member's loss (NaN after it diverged) adds nothing: where() passes it no gradient
        return torch.where(self.active, losses, torch.zeros_like(losses)).sum()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch, stage: str) -> None:
        images, labels = batch  # the same batch for every member
        logits = self.network.forward_shared(images)  # [K, B, C]
        stacked_labels = labels.expand(self.num_members, -1)
        losses = member_cross_entropy(logits, stacked_labels, self.label_smoothing)
        self._accumulate(stage, logits, stacked_labels, losses)
        if stage == "test":  # per class: each member's own metrics, as its Classifier counts them
            for k in self.active.nonzero().flatten().tolist():
                self._members[k].test_confusion.update(logits[k], labels)
                self._members[k].test_class_acc.update(logits[k], labels)

    # --- epoch metrics -----------------------------------------------------------------------
    def _accumulate(
        self, stage: str, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor
    ) -> None:
        sums = self._sums.setdefault(stage, {})
        batch_size = labels.shape[1]
        correct = (logits.argmax(dim=-1) == labels).sum(dim=1)
        for name, value in (("correct", correct), ("seen", batch_size), ("loss", losses * batch_size)):
            sums[name] = sums[name] + value if name in sums else torch.as_tensor(value, device=losses.device)

    def member_test_metrics(self, k: int) -> Classifier:
        """Member k's Classifier, whose test_confusion and test_class_acc hold its last test."""
        return self._members[k]

    def _end_epoch(self, stage: str) -> None:
        sums = self._sums.pop(stage, None)
        if not sums:
            return
        seen = torch.as_tensor(sums["seen"], dtype=torch.float32)
        accuracy = sums["correct"].float() / seen
        mean_loss = sums["loss"] / seen
        if stage == "train":
            self._log_members({"train/acc": accuracy, "train/loss_epoch": mean_loss})
            self._log_members({"train/loss": mean_loss}, logger=False)
        else:
            self._log_members({f"{stage}/acc": accuracy, f"{stage}/loss": mean_loss})

    def on_train_epoch_end(self) -> None:
        self._end_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val")

    def on_test_epoch_start(self) -> None:
        for member in self._members:
            for metric in (member.test_confusion, member.test_class_acc):
                metric.to(self.device).reset()

    def on_test_epoch_end(self) -> None:
        self._end_epoch("test")

    def _log_members(self, values: dict[str, torch.Tensor], logger: bool = True) -> None:
        """Each active member's value of each metric, under its prefix. One read-back for all."""
        active = self.active.tolist()
        host = {name: value.detach().float().cpu().tolist() for name, value in values.items()}
        for k in range(self.num_members):
            if not active[k]:
                continue
            for name, value in host.items():
                self.log(member_prefix(k) + name, value[k], logger=logger, batch_size=1)

    # --- optimizer and schedule ----------------------------------------------------------------
    def configure_optimizers(self):
        member_optimizers = [instantiate(m.hparams.optimizer)(m.parameter_groups()) for m in self._members]
        for optimizer in member_optimizers:  # as StudyModule.configure_optimizers scales each group
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * group.get("lr_mult", 1.0)
        optimizer = stacked_optimizer(
            member_optimizers, [m.net for m in self._members], self.network, exact=self.exact
        )
        schedule = self._members[0].hparams.scheduler
        if not schedule:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(schedule)(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
