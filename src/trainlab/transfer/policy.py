"""Freeze / fine-tune policies: one Lightning callback (built on `BaseFinetuning`), five configs.

`conf/transfer/<name>.yaml` sets the knobs, the callback applies them:

| option         | frozen at the start                   | during training                              |
| -------------- | ------------------------------------- | -------------------------------------------- |
| `scratch`      | nothing (and no pretrained weights)   |                                              |
| `finetune`     | nothing                               |                                              |
| `linear_probe` | the whole backbone                    |                                              |
| `partial`      | the first `freeze_depth` stages       |                                              |
| `gradual`      | the whole backbone (`freeze_depth`)   | one more stage, top down, every `unfreeze_every` epochs from `unfreeze_at_epoch` (ULMFiT, Howard & Ruder 2018) |

Every option also names the weights the backbone starts from (`transfer.pretrained`,
`pretrained_file`, `pretrained_ckpt`, `pretrained_depth`: trainlab.transfer.pretrained), none by
default; the options share one base, conf/transfer/base/policy.yaml.

Stages are what the network declares (trainlab.layers.transferable.TransferNetwork); the head
always trains. The backbone trains at `optimizer.lr * backbone_lr_mult` (discriminative rates),
the head at `optimizer.lr`: the policy's `param_group_plan()` says which parameter is in which
group, and the LightningModule (trainlab.models.study_module.StudyModule) asks for it when it
builds its optimizer. With `layer_decay` (trainlab.transfer.layer_decay) each layer gets its own
group, named after the layer (`head`, `layer4`, `blocks.2`, ...: the LR monitor logs
`lr-<Optimizer>/<name>`), at `optimizer.lr * layer_decay ** depth` (depth from the top, the head
at 0), times `backbone_lr_mult` for the backbone's layers: the two multiply. Frozen stages keep
their depth (the layers above them do not move up) and, frozen for good, stay out of the optimizer.

Frozen means: `requires_grad=False` and out of reach of the optimizer, and, with
`freeze_bn_stats=true` (default), the stage's BatchNorm layers held in eval mode so that their
running statistics do not move and a frozen stage computes exactly the function it was given
(the practice of Keras and detectron2 for frozen BN). With `freeze_bn_stats=false` the frozen
BN layers keep normalising with batch statistics and updating their running statistics on the
new data (their scale and shift stay frozen).

Parameter groups are fixed for the whole run: a stage that gradual unfreezing will open later is
in the backbone group from the start, with `requires_grad=False` until then, and optimizers skip
parameters without gradients (no step, no momentum, no weight decay). So the learning-rate
schedule covers every group; groups added mid-run (BaseFinetuning.unfreeze_and_add_param_group)
would escape a schedule built at the start.

At the start of training the callback logs the trainable and frozen parameter counts (stage by
stage, and as `transfer/trainable_params`, `transfer/frozen_params` to the loggers); at the end
it checks that every tensor frozen for the whole run still has its starting value.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from trainlab.layers.stages import Split, resolve_depth
from trainlab.layers.transferable import transfer_view
from trainlab.transfer.layer_decay import Layer, check_layer_decay, decay_layers
from trainlab.transfer.pretrained import WeightSources
from trainlab.utils.config import ConfigError

log = logging.getLogger(__name__)


class TransferPolicy(BaseFinetuning):
    """Freeze the first `freeze_depth` backbone stages, optionally unfreeze them on a schedule.

    Args:
        name: the policy's name (its config option), for messages.
        freeze_depth: backbone stages frozen at the start: 0..number of stages, or `all`.
        backbone_lr_mult: the backbone's learning rate relative to `optimizer.lr`.
        layer_decay: layer-wise learning-rate decay, a factor in (0, 1], or None (off).
        freeze_bn_stats: frozen BatchNorm layers stay in eval mode (statistics fixed).
        unfreeze_at_epoch: epoch at which gradual unfreezing opens the top frozen stage (null: never).
        unfreeze_every: epochs between two unfreezings.
        pretrained, pretrained_file, pretrained_ckpt, pretrained_depth: the weights the backbone
            starts from (trainlab.transfer.pretrained.WeightSources), loaded when the model is built.
    """

    def __init__(
        self,
        name: str = "scratch",
        freeze_depth: int | str = 0,
        backbone_lr_mult: float = 1.0,
        layer_decay: float | None = None,
        freeze_bn_stats: bool = True,
        unfreeze_at_epoch: int | None = None,
        unfreeze_every: int = 1,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        pretrained_ckpt: str | None = None,
        pretrained_depth: int | str | None = None,
    ) -> None:
        super().__init__()
        self.weights = WeightSources(
            name, bool(pretrained), pretrained_file, pretrained_ckpt, pretrained_depth
        )
        if not (freeze_depth == "all" or (isinstance(freeze_depth, int) and freeze_depth >= 0)):
            raise ConfigError(
                f"transfer.freeze_depth={freeze_depth!r}: give a number of stages >= 0, or `all`."
            )
        if not backbone_lr_mult >= 0:
            raise ConfigError(f"transfer.backbone_lr_mult={backbone_lr_mult!r} must be >= 0.")
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise ConfigError(f"transfer.unfreeze_at_epoch={unfreeze_at_epoch!r} must be >= 0 or null.")
        if unfreeze_every < 1:
            raise ConfigError(f"transfer.unfreeze_every={unfreeze_every!r} must be >= 1.")
        self.name = name
        self.freeze_depth = freeze_depth
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.layer_decay = check_layer_decay(layer_decay)
        self.freeze_bn_stats = freeze_bn_stats
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.unfreeze_every = unfreeze_every
        self.split: Split | None = None
        self._plan: list[dict[str, Any]] | None = None
        self.depth = 0  # stages frozen at the start
        self.frozen: set[int] = set()  # stages frozen now
        self._trainable: set[str] = set()  # parameters the network itself lets train
        self._snapshot: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}  # trained and frozen parameters, for summary.json

    # --- freezing -------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # validate/test: nothing trains
            super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        net = pl_module.net
        self.split = transfer_view(net).transfer_split()
        self.depth = resolve_depth(self.freeze_depth, self.split, "transfer.freeze_depth")
        # what the network keeps fixed itself (e.g. resnet's inert Fixup scalars) stays fixed
        self._trainable = {n for n, p in net.named_parameters() if p.requires_grad}
        # before freezing: timm's layer grouping skips parameters without requires_grad
        layers = None if self.layer_decay is None else decay_layers(net, self.split, self.layer_decay)
        self.frozen = set()
        for index in range(len(self.split.stages)):
            self._set_frozen(net, index, index < self.depth)
        self._plan = self._group_plan(net, layers)

    def param_group_plan(self) -> list[dict[str, Any]] | None:
        """The optimizer's parameter groups this policy asks for, once it has frozen the network
        (Lightning runs `setup` before `configure_optimizers`): a list of {"name", "params":
        parameter names relative to the LightningModule, "lr_mult": the group's rate relative to
        optimizer.lr}; parameters in no group are never optimised. None: every trainable
        parameter in one group at optimizer.lr."""
        return self._plan

    def frozen_norm_layers(self, pl_module: pl.LightningModule) -> list[nn.Module]:
        """The norm layers whose statistics this policy holds fixed (frozen stages with
        freeze_bn_stats): PreciseBN leaves them as they are."""
        if not self.freeze_bn_stats or self.split is None:
            return []
        return [
            norm
            for index in sorted(self.frozen)
            for norm in self.split.stages[index].norm_layers(pl_module.net)
        ]

    def _set_frozen(self, net: nn.Module, index: int, frozen: bool) -> None:
        stage = self.split.stages[index]
        for name, param in stage.parameters(net).items():
            if name in self._trainable:
                param.requires_grad_(not frozen)
        if self.freeze_bn_stats:
            for norm in stage.norm_layers(net):
                norm.train(not frozen)
        (self.frozen.add if frozen else self.frozen.discard)(index)

    def _group_plan(self, net: nn.Module, layers: list[Layer] | None) -> list[dict[str, Any]] | None:
        """Parameter groups (names relative to the LightningModule) for StudyModule.parameter_groups:
        the head at lr, the backbone at lr * backbone_lr_mult, or with layer decay one group per
        layer. Stages frozen for good are left out; stages that gradual unfreezing will open are in
        from the start."""
        if not self.frozen and self.backbone_lr_mult == 1.0 and layers is None:
            return None  # the default: every trainable parameter in one group
        will_train = set(range(len(self.split.stages)))
        if self.unfreeze_at_epoch is None:
            will_train -= self.frozen
        backbone = [
            name
            for index in sorted(will_train)
            for name in self.split.stages[index].parameters(net)
            if name in self._trainable
        ]
        in_backbone = set(self.split.backbone_keys())
        # in the network's own order: a resumed optimizer maps its state to parameters by position
        head = [n for n, _ in net.named_parameters() if n in self._trainable and n not in in_backbone]
        if layers is None:
            groups = [("head", head, 1.0), ("backbone", backbone, self.backbone_lr_mult)]
        else:
            groups = []
            in_head, trained = set(head), set(backbone)
            for layer in layers:  # a layer may hold head and backbone parameters (timm: a final norm)
                groups.append(("head", [n for n in layer.params if n in in_head], layer.scale))
                lower = [n for n in layer.params if n in trained]
                groups.append((layer.name, lower, layer.scale * self.backbone_lr_mult))
        plan, names = [], set()
        for name, params, lr_mult in groups:
            if params:
                name = name if name not in names else f"{name}#{len(plan)}"  # LR monitor: unique names
                names.add(name)
                plan.append({"name": name, "params": [f"net.{n}" for n in params], "lr_mult": lr_mult})
        return plan

    # --- gradual unfreezing ---------------------------------------------------------------------
    def stages_to_unfreeze(self, epoch: int) -> list[int]:
        """Stages gradual unfreezing has opened by `epoch`: the top frozen one at
        `unfreeze_at_epoch`, then one more (downwards) every `unfreeze_every` epochs."""
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch:
            return []
        count = 1 + (epoch - self.unfreeze_at_epoch) // self.unfreeze_every
        return list(range(self.depth - 1, -1, -1))[:count]

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Any) -> None:
        for index in self.stages_to_unfreeze(epoch):  # also right after a resume
            if index in self.frozen:
                self._set_frozen(pl_module.net, index, False)
                for key in self.split.stages[index].keys:
                    self._snapshot.pop(key, None)
                log.info(
                    f"transfer={self.name}: epoch {epoch}: unfroze stage {self.split.stages[index].name}"
                )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Groups never change, so BaseFinetuning's bookkeeping of added groups is not needed.
        self.finetune_function(pl_module, trainer.current_epoch, None)
        if self.freeze_bn_stats:  # whatever set the module to train mode, frozen BN stays in eval
            for index in self.frozen:
                for norm in self.split.stages[index].norm_layers(pl_module.net):
                    norm.eval()

    def state_dict(self) -> dict[str, Any]:
        return {}  # the schedule is a function of the epoch; nothing to restore on resume

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    # --- report and check -------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in pl_module.parameters() if not p.requires_grad)
        for logger in trainer.loggers:
            logger.log_metrics(
                {"transfer/trainable_params": trainable, "transfer/frozen_params": frozen},
                step=trainer.global_step,
            )
        self._counts = {"trainable_params": trainable, "frozen_params": frozen}
        log.info(self.describe(net, trainable, frozen))
        state = net.state_dict(keep_vars=True)
        self._snapshot = {}
        for index in self.frozen:
            for key in self.split.stages[index].keys:
                tensor = state[key]
                is_param = isinstance(tensor, nn.Parameter)
                if (is_param and key in self._trainable) or (not is_param and self.freeze_bn_stats):
                    self._snapshot[key] = tensor.detach().to("cpu", copy=True)

    def summary_items(self, trainer: pl.Trainer) -> dict[str, Any]:
        """summary.json's `transfer`: the parameters trained and frozen when training started."""
        return {"transfer": self._counts} if self._counts else {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = pl_module.net.state_dict()
        changed = [k for k, before in self._snapshot.items() if not torch.equal(state[k].cpu(), before)]
        if changed:
            raise RuntimeError(
                f"transfer={self.name}: frozen tensors changed during training: {', '.join(changed[:10])}. "
                "Something outside the transfer policy updates them (weight decay applied by hand, "
                "another callback, a custom optimizer)."
            )
        if self._snapshot:
            log.info(
                f"transfer={self.name}: checked: the {len(self._snapshot)} frozen tensors kept their values."
            )

    def describe(self, net: nn.Module, trainable: int, frozen: int) -> str:
        lines = [
            f"transfer={self.name}: freeze_depth={self.freeze_depth} of {len(self.split.stages)} stages, "
            f"backbone lr x{self.backbone_lr_mult:g}, freeze_bn_stats={self.freeze_bn_stats}"
            + (f", layer decay {self.layer_decay:g}" if self.layer_decay is not None else "")
            + (
                f", unfreezing from epoch {self.unfreeze_at_epoch} every {self.unfreeze_every}"
                if self.unfreeze_at_epoch is not None
                else ""
            ),
            f"  {'stage':<28} {'params':>12}  state",
        ]
        for index, stage in enumerate([*self.split.stages, self.split.head]):
            is_frozen = index in self.frozen
            state = "frozen" if is_frozen else "trainable"
            if is_frozen and self.freeze_bn_stats and stage.norm_layers(net):
                state += " (BatchNorm in eval mode: Lightning's 'modules in eval mode' warning means these)"
            lines.append(f"  {stage.name:<28} {stage.numel(net):>12,}  {state}")
        lines.append(f"  trainable {trainable:,} / frozen {frozen:,} parameters")
        if self._plan:
            rates = ", ".join(f"{g['name']} x{g['lr_mult']:.4g}" for g in self._plan)
            lines.append(f"  learning rates (optimizer.lr times): {rates}")
        return "\n".join(lines)
