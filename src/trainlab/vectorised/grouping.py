"""Which jobs of a multirun can train together as one vectorised model, and why others cannot.

Jobs form a group when their configs differ only in keys that keep the network's shape and the
training's course: the seed (init draw, data order, augmentation draw), the init scheme and its
knobs, the learning rate, the weight decay and the label smoothing (`VECTORISED_KEYS`). Each group
trains in one process as one stacked network (trainlab.vectorised.group); a job that cannot join
a group, or whose config cannot be vectorised (`why_not_vectorised`), runs as an ordinary job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys in which the members of one group may differ (a key names its whole subtree).
VECTORISED_KEYS = ("seed", "init", "optimizer.lr", "optimizer.weight_decay", "loss.label_smoothing")
# Keys that differ between the jobs of any multirun and say nothing about the training.
_JOB_KEYS = ("hydra", "paths.output_dir")

# trainlab's own networks: K copies of one stack into one module (trainlab.vectorised.stacked)
VECTORISABLE_MODELS = ("trainlab.models.mlp.MLP", "trainlab.models.cnn.CNN", "trainlab.models.resnet.ResNet")
VECTORISABLE_OPTIMIZERS = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")
VECTORISABLE_LOSSES = ("torch.nn.CrossEntropyLoss",)
# The callbacks a group offers each member (trainlab.vectorised.group); any other refuses the job.
GROUP_CALLBACKS = (
    "model_checkpoint",
    "last_checkpoint",
    "interrupt_checkpoint",
    "lr_monitor",
    "throughput",
    "rich_progress_bar",
    "divergence_guard",
    "confusion_matrix",
    "layer_stats",
    "augment_preview",
)


@dataclass(frozen=True)
class Group:
    """Jobs (indices into the sweep's list) that train as one; `reason`: why a single job runs
    on its own although others might have joined it ("" when it simply has no partner)."""

    jobs: tuple[int, ...]
    reason: str = ""

    @property
    def vectorised(self) -> bool:
        return len(self.jobs) > 1


def why_not_vectorised(cfg: DictConfig | Mapping) -> str | None:
    """Why this job's config cannot train as a member of a vectorised group, or None."""
    if not OmegaConf.is_config(cfg):  # a job's config is read where it is (a copy: 16 ms a job)
        cfg = OmegaConf.create(_container(cfg))
    target = OmegaConf.select(cfg, "model._target_")
    if target not in VECTORISABLE_MODELS:
        return f"model {target} is not one of trainlab's own networks (mlp, cnn, resnet)"
    if cfg.get("module"):
        return f"module={OmegaConf.select(cfg, 'module._target_')} is a study's own LightningModule"
    if _container(cfg.get("mix")):
        return "mix (Mixup/CutMix) mixes each batch with draws of its own"
    transfer = OmegaConf.select(cfg, "transfer.name")
    if transfer not in (None, "scratch"):
        return f"transfer={transfer} changes what trains during the run"
    if OmegaConf.select(cfg, "model.pretrained_ckpt"):
        return "model.pretrained_ckpt loads weights into the network"
    if cfg.get("ckpt_path"):
        return "ckpt_path resumes one run"
    if cfg.get("compile"):
        return "compile=true (torch.compile of the stacked network is not supported)"
    optimizer = OmegaConf.select(cfg, "optimizer._target_")
    if optimizer not in VECTORISABLE_OPTIMIZERS:
        return f"optimizer {optimizer} (vectorised: {', '.join(VECTORISABLE_OPTIMIZERS)})"
    if OmegaConf.select(cfg, "optimizer.amsgrad"):
        return "optimizer.amsgrad=true"
    loss = OmegaConf.select(cfg, "loss._target_")
    if loss not in VECTORISABLE_LOSSES:
        return f"loss {loss} (vectorised: cross-entropy)"
    trainer = cfg.get("trainer") or {}
    if str(trainer.get("devices", 1)) not in ("1", "auto") or trainer.get("num_nodes", 1) != 1:
        return "trainer.devices/num_nodes: a group trains on one device"
    if trainer.get("strategy") not in (None, "auto"):
        return f"trainer.strategy={trainer.get('strategy')}"
    if trainer.get("accumulate_grad_batches", 1) != 1:
        return "trainer.accumulate_grad_batches != 1"
    if trainer.get("gradient_clip_val"):
        return "trainer.gradient_clip_val clips the norm of all members' gradients together"
    callbacks = [name for name, c in (_container(cfg.get("callbacks")) or {}).items() if c]
    others = [name for name in callbacks if name not in GROUP_CALLBACKS]
    if others:
        return f"callbacks {', '.join(sorted(others))} (a group offers: {', '.join(GROUP_CALLBACKS)})"
    return None


def group_key(cfg: DictConfig | Mapping) -> str:
    """The config without the keys members may differ in: equal keys, one group."""
    data = _container(cfg)
    for key in (*VECTORISED_KEYS, *_JOB_KEYS):
        _drop(data, key.split("."))
    return json.dumps(data, sort_keys=True, default=str)


def plan_groups(configs: Sequence[DictConfig | Mapping], max_members: int = 64) -> list[Group]:
    """The sweep's jobs as groups, in the order of their first job. Jobs that cannot be
    vectorised run alone, with the reason; a group larger than `max_members` is split."""
    if max_members < 1:
        raise ValueError(f"hydra.launcher.max_members={max_members} must be >= 1.")
    plan: list[Group] = []
    by_key: dict[str, list[int]] = {}
    reasons: dict[int, str] = {}
    for index, cfg in enumerate(configs):
        reason = why_not_vectorised(cfg)
        if reason is not None:
            reasons[index] = reason
            by_key[f"alone:{index}"] = [index]
        else:
            by_key.setdefault(group_key(cfg), []).append(index)
    for jobs in by_key.values():
        for start in range(0, len(jobs), max_members):
            part = tuple(jobs[start : start + max_members])
            plan.append(Group(part, reasons.get(part[0], "")))
    return sorted(plan, key=lambda group: group.jobs[0])


def _container(cfg: Any) -> Any:
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=False)
    return json.loads(json.dumps(cfg, default=str)) if cfg is not None else None


def _drop(data: Any, path: list[str]) -> None:
    if not isinstance(data, dict):
        return
    if len(path) == 1:
        data.pop(path[0], None)
    else:
        _drop(data.get(path[0]), path[1:])
