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

`transfer.pretrained_depth=k` loads only the first k backbone stages (trainlab.transfer.stages);
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from trainlab.run.checkpoints import trusted_checkpoint
from trainlab.transfer.network import transfer_view
from trainlab.transfer.stages import Split, resolve_depth
from trainlab.utils.config import ConfigError, plain
from trainlab.utils.network import host_reachable

log = logging.getLogger(__name__)

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


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
            lines.append(f"  not in the source (keep their init): {_some(self.missing)}")
        if self.unused:
            lines.append(f"  in the source but not used (its head, ...): {_some(self.unused)}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def _some(keys: list[str], shown: int = 8) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


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

    Read like every checkpoint (trainlab.run.checkpoints): weights_only=True, and refused when
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


# --- timm hub weights and local files ------------------------------------------------------------


def timm_state(
    model_cfg: Mapping, input_shape: list[int], num_classes: int, file: str | None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """timm's pretrained weights of `model.name`, from `file` or the hub, as timm loads them:
    first conv adapted to the data's channels, old classifier dropped (what the timm adapter,
    trainlab.models.timm_backbone.TimmTransfer, provides as its `pretrained_state`)."""
    from trainlab.models.timm_backbone import create

    name = model_cfg.get("name")
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"transfer.pretrained_file={file!r} is not a file.")
        weights, source = str(path.resolve()), str(path)
    else:
        weights, source = hub_weights(name)
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("_target_", "name", "use_axes")}
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    with _capture_logs("timm.models._builder") as messages:
        try:
            net = create(name, tuple(input_shape), num_classes, pretrained=True, **kwargs)
        except (RuntimeError, OSError, KeyError) as error:
            raise ConfigError(
                f"timm could not load the weights of {name!r} from {source}: {error}"
            ) from error
    notes = [f"timm: {m}" for m in messages]
    state = net.state_dict()
    if file:  # timm loads a file non-strictly: keep only the tensors the file really holds
        state, file_notes = _tensors_from_file(state, weights, f"transfer.pretrained_file={file!r}")
        notes += file_notes
    return state, f"{source} (timm {name})", notes


def _tensors_from_file(
    state: dict[str, torch.Tensor], path: str, setting: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The network's tensors whose names are in the weights file at `path`, as timm loaded them,
    plus the file's tensors that have no place in the network.

    timm drops a file's old classifier and then loads with strict=False, so a file of another
    network loads nothing, silently: every tensor would keep its random initialisation. The
    file's keys (read with timm's own reader: `state_dict`/`module.` wrappers removed) are
    compared with the network's; none in common is an error that shows both.
    """
    from timm.models import load_state_dict

    file_state = load_state_dict(path)
    file_keys = list(file_state)
    matched = {k: v for k, v in state.items() if k in file_state}
    extra = [k for k in file_keys if k not in state]
    if not matched:
        raise ConfigError(
            f"{setting}: none of its {len(file_keys)} tensors has the name of one of this network's "
            f"{len(state)} (the file's first keys: {', '.join(file_keys[:3])}; this network's: "
            f"{', '.join(list(state)[:3])}). Is it the weights file of model.name, saved as timm names them?"
        )
    notes = [f"the file holds {len(file_keys)} tensors; {len(matched)} match this network by name"]
    if extra:
        notes.append(f"in the file but not in this network: {_some(extra)}")
    # the file's other tensors stay in the state, so that the report lists them as unused
    return {**matched, **{k: file_state[k] for k in extra}}, notes


def hub_weights(name: str) -> tuple[str | None, str]:
    """(a local file to load, or None to let timm download; a description). Fails fast offline."""
    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    url = getattr(pretrained_cfg, "url", None)
    if not (hub_id or url):
        raise ConfigError(
            f"timm has no pretrained weights for model.name={name!r}: use transfer.pretrained=false, "
            "or a weights file of yours with transfer.pretrained_file=<path>."
        )
    cached = cached_weights(pretrained_cfg)
    if cached is not None:
        return cached, f"cached {hub_id or url}"
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT) if hub_id else url
    if not hub_reachable(endpoint, huggingface=bool(hub_id)):
        host = urlparse(endpoint).hostname
        why = "HF_HUB_OFFLINE is set" if hub_id and _hf_offline_env() else f"{host} cannot be reached"
        download = (
            f"`hf download {hub_id} model.safetensors --local-dir <dir>`" if hub_id else f"`wget {url}`"
        )
        raise ConfigError(
            f"transfer.pretrained=true needs the hub weights of {name!r} ({hub_id or url}), but this machine "
            f"is offline ({why}). Download them where there is internet, e.g. {download}, copy the "
            f"file here and pass transfer.pretrained_file=<path to the file>."
        )
    return None, hub_id or url


def cached_weights(pretrained_cfg: Any) -> str | None:
    """A weights file of this pretrained cfg already in the Hugging Face or torch hub cache."""
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        names = [pretrained_cfg.hf_hub_filename] if pretrained_cfg.hf_hub_filename else []
        names += ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            path = try_to_load_from_cache(hub_id, filename)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    url = getattr(pretrained_cfg, "url", None)
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if path.is_file():
            return str(path)
    return None


def _hf_offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(endpoint: str = DEFAULT_HF_ENDPOINT, huggingface: bool = True) -> bool:
    """Whether `endpoint` answers a TCP connection within a few seconds (through the HTTPS proxy
    when one is set). HF_HUB_OFFLINE=1 means no for the Hugging Face hub, without trying."""
    if huggingface and _hf_offline_env():
        return False
    return host_reachable(endpoint)


@contextmanager
def _capture_logs(logger_name: str) -> Iterator[list[str]]:
    """Collect what a library logs (timm's missing / unexpected keys) for the load report."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "keys" in record.getMessage().lower() or record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
