"""The base LightningModule of every study: a network, its optimizer, parameter groups, schedule.

A study's module (the Classifier, NoisyRegression, one of your own) subclasses `StudyModule` and
defines only its loss and metrics (steps, epoch-end logging, LOGGED_METRICS). What every study
shares lives here, once:

- the network, built from plain config data (`build_network`), so a checkpoint rebuilds it
  (`RebuildableModule`: the checkpoint names its class);
- the optimizer, over parameter groups: the transfer policy's plan when the trainer has one
  (head at optimizer.lr, backbone at optimizer.lr * transfer.backbone_lr_mult, or one group per
  layer with transfer.layer_decay; frozen stages left out), refined by the study's own per-parameter options (`parameter_options`, e.g. a weight
  decay on weights only);
- the learning-rate schedule, stepped every optimizer step.

Its steps get images as normalised float32 on the model's device: trainlab's DataModule ships
uint8 batches and converts them there, in its `on_after_batch_transfer` (trainlab.data.on_device).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from hydra.utils import instantiate

from trainlab.models.factory import build_network
from trainlab.models.rebuildable import RebuildableModule
from trainlab.utils.config import plain


@runtime_checkable
class ParameterGroupPlanner(Protocol):
    """A callback that decides the optimizer's parameter groups (trainlab.transfer.TransferPolicy:
    frozen stages left out, the backbone at a lower rate, layer-wise decay)."""

    def param_group_plan(self) -> list[dict[str, Any]] | None:
        """[{"name", "params": parameter names relative to the LightningModule, "lr_mult"}, ...];
        None: no plan (every trainable parameter in one group)."""
        ...


class StudyModule(RebuildableModule):
    """A network trained with a configured optimizer and schedule; subclasses add the objective.

    Args:
        network: arguments of `build_network` (model, norm, activation configs, input shape,
            number of classes): plain data, so that checkpoints rebuild the same network.
        optimizer: a partial optimizer config (`_target_`, `_partial_: true`, lr, ...).
        scheduler: a partial schedule config called with (optimizer, total_steps), or None.
        **hparams: the subclass's own hyperparameters (plain data), stored with the others.
    """

    def __init__(
        self, network: Mapping, optimizer: Mapping, scheduler: Mapping | None = None, **hparams: Any
    ) -> None:
        super().__init__()
        # logger=False: the run logs its whole config itself (trainlab.tracking.tracked_config).
        self.save_hyperparameters(
            {
                "network": plain(network),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler) or None,
                **hparams,
            },
            logger=False,
        )
        self.net = build_network(**self.hparams.network)  # the architecture only: no pretrained weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # --- parameter groups ----------------------------------------------------------------------
    def transfer_plan(self) -> list[dict[str, Any]] | None:
        """The parameter groups a callback of the trainer plans (a `ParameterGroupPlanner`, i.e.
        the transfer policy: names relative to this module, an `lr_mult` each), or None."""
        if self._trainer is None:
            return None
        callbacks = self.trainer.callbacks
        plans = [c.param_group_plan() for c in callbacks if isinstance(c, ParameterGroupPlanner)]
        return next((plan for plan in plans if plan), None)

    def parameter_options(self, name: str, param: torch.nn.Parameter) -> dict[str, Any]:
        """Optimizer options of one parameter beyond its group's (e.g. {"weight_decay": 0.0});
        parameters with equal options share a group. None by default."""
        return {}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """What the optimizer receives: the transfer plan's groups (or one group of every
        trainable parameter), each split by `parameter_options`. A group's `lr_mult` is its
        learning rate relative to the optimizer's `lr`; parameters in no group never train."""
        params = dict(self.named_parameters())
        plan = self.transfer_plan() or [{"params": [n for n, p in params.items() if p.requires_grad]}]
        groups = []
        for group in plan:
            settings = {k: v for k, v in group.items() if k != "params"}
            by_options: dict[tuple, list[torch.nn.Parameter]] = {}
            for name in group["params"]:
                options = self.parameter_options(name, params[name])
                by_options.setdefault(tuple(sorted(options.items())), []).append(params[name])
            for index, (options, members) in enumerate(by_options.items()):
                named = {"name": f"{settings['name']}/{index}"} if "name" in settings and index else {}
                groups.append({**settings, **dict(options), **named, "params": members})
        return groups

    # --- optimizer and schedule ----------------------------------------------------------------
    @property
    def lr(self) -> float:
        """optimizer.lr, under the name Lightning's LR finder reads and sets (its `attr_name`)."""
        return self.hparams.optimizer["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hparams.optimizer["lr"] = float(value)  # what configure_optimizers builds from

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.parameter_groups())
        for group in optimizer.param_groups:  # before the schedule: it scales each group's own rate
            group["lr"] = group["lr"] * group.get("lr_mult", 1.0)
        if not self.hparams.scheduler:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.hparams.scheduler)(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
