"""Load pretrained backbone weights into a built network, once, after the init scheme.

Three sources, all keys of the `transfer` config (every option has them; `WeightSources`):

- `transfer.pretrained=true` (model=timm): the timm hub weights of `model.name`. Offline, the
  hub is not tried (it would retry for about a minute): the run stops at once with an error that
  says to download the file and pass `transfer.pretrained_file`. Weights already in the local
  Hugging Face / torch hub cache load offline too.
- `transfer.pretrained_file=<path>` (model=timm): a local weights file (.safetensors, .pth, .bin),
  loaded by timm's own mechanism (`pretrained_cfg_overlay=dict(file=...)`): it adapts the first
  convolution to the data's channels (RGB weights -> grey: summed over the colour channels)
  and drops the old classifier.
- `transfer.pretrained_ckpt=<trainlab .ckpt>` (any model): the backbone of an earlier trainlab
  run, matched by name and shape.

`transfer.pretrained_depth=k` loads only the first k backbone stages (trainlab.layers.stages);
the rest of the backbone keeps its initialisation. The head is never loaded: it is new for the
data's classes and keeps what the init scheme gave it. So with `init=<scheme>` and pretrained
weights, the scheme initialises the head (and any stage not loaded); the loaded stages are the
pretrained ones. Every load returns (and logs) a report of which tensors were loaded and which
were not.

Reloading a checkpoint (eval, `ckpt_path=` resume) never comes here: the checkpoint holds the
weights, and the module builds its network from the architecture alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainlab.checkpoints.reading import trusted_checkpoint
from trainlab.layers.stages import Split, resolve_depth, some_keys
from trainlab.layers.transferable import transfer_view
from trainlab.utils.config import ConfigError, plain

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What a pretrained load did, tensor by tensor (state-dict keys of the network)."""

    source: str
    depth: int
    stages: list[str]
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # selected, but not in the source: keep init
    not_selected: list[str] = field(default_factory=list)  # stages beyond pretrained_depth: keep init
    head: list[str] = field(default_factory=list)  # the new head: keeps init
    unused: list[str] = field(default_factory=list)  # in the source, not loaded (e.g. its head)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        loaded_stages = ", ".join(self.stages[: self.depth]) or "none"
        lines = [
            f"Pretrained weights from {self.source}: loaded {len(self.loaded)} tensors, "
            f"stages {loaded_stages} ({self.depth} of {len(self.stages)}).",
            f"  not loaded, new head (keeps its init): {', '.join(self.head)}",
        ]
        if self.not_selected:
            rest = ", ".join(self.stages[self.depth :])
            lines.append(
                f"  not loaded, beyond transfer.pretrained_depth={self.depth} (keep their init): {rest} "
                f"({len(self.not_selected)} tensors)"
            )
        if self.missing:
            lines.append(f"  not in the source (keep their init): {some_keys(self.missing)}")
        if self.unused:
            lines.append(f"  in the source but not used (its head, ...): {some_keys(self.unused)}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


# --- the sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSources:
    """Where a run's backbone weights come from: the `transfer.pretrained*` settings.

    Args:
        policy: the transfer option (`transfer.name`), for its checks and messages.
        pretrained: timm hub weights of `model.name` (model=timm).
        pretrained_file: a local timm weights file (model=timm).
        pretrained_ckpt: a trainlab checkpoint whose backbone is loaded (any model).
        pretrained_depth: load only the first k backbone stages (None: all).
    """

    policy: str = "scratch"
    pretrained: bool = False
    pretrained_file: str | None = None
    pretrained_ckpt: str | None = None
    pretrained_depth: int | str | None = None

    def __post_init__(self) -> None:
        if self.policy == "scratch" and self.any:
            raise ConfigError(
                "transfer=scratch trains from the initialisation, but it is given weights "
                f"({self.text()}): use transfer=finetune (everything trains) or another policy "
                "(linear_probe, partial, gradual), or drop the weights."
            )
        if self.pretrained_ckpt and (self.pretrained or self.pretrained_file):
            raise ConfigError(
                "transfer.pretrained_ckpt and transfer.pretrained/transfer.pretrained_file both name "
                "weights: choose one."
            )

    @classmethod
    def from_config(cls, transfer: Mapping | None) -> WeightSources:
        """The sources a `transfer` config names (its other keys are the policy's knobs)."""
        transfer = plain(transfer) or {}
        return cls(
            policy=transfer.get("name") or "scratch",
            pretrained=bool(transfer.get("pretrained")),
            pretrained_file=transfer.get("pretrained_file"),
            pretrained_ckpt=transfer.get("pretrained_ckpt"),
            pretrained_depth=transfer.get("pretrained_depth"),
        )

    @property
    def any(self) -> bool:
        return bool(self.pretrained or self.pretrained_file or self.pretrained_ckpt)

    def text(self) -> str:
        named = [
            ("transfer.pretrained=true", self.pretrained),
            (f"transfer.pretrained_file={self.pretrained_file}", self.pretrained_file),
            (f"transfer.pretrained_ckpt={self.pretrained_ckpt}", self.pretrained_ckpt),
        ]
        return ", ".join(text for text, on in named if on)


# --- entry point ---------------------------------------------------------------------------


def load_pretrained(
    weights: WeightSources,
    net: nn.Module,
    network: Mapping | None = None,
    trusted_targets: list[str] | None = None,
) -> LoadReport | None:
    """Load the backbone weights `weights` names into `net`; return what was loaded (also logged).

    Args:
        weights: the `transfer.pretrained*` settings.
        net: the network (a trainlab.transfer.TransferNetwork, or one with a registered adapter).
        network: the network's config (`build_network`'s arguments: model, input shape, classes),
            needed by sources that rebuild the network with their weights (timm's hub and files).
        trusted_targets: packages of your own a checkpoint may name (`trusted_targets`).

    Called by trainlab.builders.build_model after the init scheme, and not when a run resumes
    (the checkpoint has the weights). None when there is nothing to load.
    """
    if not weights.any:
        if weights.policy != "scratch":
            log.warning(
                f"transfer={weights.policy} with no pretrained weights (transfer.pretrained, "
                "transfer.pretrained_file, transfer.pretrained_ckpt): the backbone keeps its "
                "initialisation (a random-features baseline)."
            )
        return None
    view = transfer_view(net)
    split = view.transfer_split()
    depth = resolve_depth(weights.pretrained_depth, split, "transfer.pretrained_depth")
    if weights.pretrained_ckpt:
        state, source, notes = checkpoint_state(weights.pretrained_ckpt, trusted_targets)
    else:
        own_weights = getattr(view, "pretrained_state", None)
        if not callable(own_weights):
            raise ConfigError(
                "transfer.pretrained and transfer.pretrained_file load a network's own published "
                f"weights (timm's, model=timm); {type(net).__name__} has none (no `pretrained_state`). "
                "For trainlab's own models use transfer.pretrained_ckpt=<a trainlab checkpoint>."
            )
        state, source, notes = own_weights(dict(network or {}), weights.pretrained_file)
    report = copy_backbone(net, split, depth, state, source)
    report.notes += notes
    log.info(report.text())
    return report


# --- copying a backbone ----------------------------------------------------------------------


def copy_backbone(
    net: nn.Module, split: Split, depth: int, state: Mapping[str, torch.Tensor], source: str
) -> LoadReport:
    """Copy the tensors of the first `depth` stages from `state` into `net`, matched by name.

    A tensor with the same name and another shape means another architecture: a clear error.
    """
    selected = split.backbone_keys(depth)
    target = net.state_dict()
    report = LoadReport(source=source, depth=depth, stages=split.names, head=list(split.head.keys))
    report.not_selected = [k for k in split.backbone_keys() if k not in set(selected)]
    mismatched = []
    for key in selected:
        if key not in state:
            report.missing.append(key)
        elif tuple(state[key].shape) != tuple(target[key].shape):
            mismatched.append(
                f"{key}: {tuple(state[key].shape)} in the source, {tuple(target[key].shape)} here"
            )
        else:
            report.loaded.append(key)
    if mismatched:
        raise ConfigError(
            f"Pretrained weights from {source} do not fit this network (another model config, or "
            f"other input channels?): " + "; ".join(mismatched[:5])
        )
    if not report.loaded:
        raise ConfigError(
            f"Pretrained weights from {source} share no backbone tensor with this network "
            f"(first keys here: {', '.join(selected[:3])}; in the source: {', '.join(list(state)[:3])}): "
            "was the source trained with the same model?"
        )
    net.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    skipped = set(report.loaded) | set(report.not_selected)
    report.unused = [k for k in state if k not in skipped]
    return report


def checkpoint_state(
    path: str | os.PathLike, trusted_targets: list[str] | None = None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The network tensors (`net.` prefix removed) of a trainlab checkpoint.

    Read like every checkpoint (trainlab.checkpoints.reading): weights_only=True, and refused when
    it names a target that is not trusted, though only its tensors are used here."""
    path = Path(path).expanduser()
    checkpoint = trusted_checkpoint(path, "transfer.pretrained_ckpt", trusted_targets)
    state = checkpoint["state_dict"]
    tensors = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not tensors:
        raise ConfigError(
            f"transfer.pretrained_ckpt={str(path)!r} is not a trainlab checkpoint (no `net.` tensors)."
        )
    model = ((checkpoint.get("hyper_parameters") or {}).get("network") or {}).get("model") or {}
    what = model.get("name") or model.get("_target_", "?")
    return tensors, f"{path} ({what})", []
