"""Load pretrained backbone weights into a built network, once, after the init scheme.

Three sources, all keys of the `model` config (see trainlab.models.factory.WEIGHT_SOURCES):

- `model.pretrained=true` (model=timm): the timm hub weights of `model.name`. Offline, the
  hub is not tried (it would retry for about a minute): the run stops at once with an error that
  says to download the file and pass `model.pretrained_file`. Weights already in the local
  Hugging Face / torch hub cache load offline too.
- `model.pretrained_file=<path>` (model=timm): a local weights file (.safetensors, .pth, .bin),
  loaded by timm's own mechanism (`pretrained_cfg_overlay=dict(file=...)`): it adapts the first
  convolution to the data's channels (RGB weights -> grey: summed over the colour channels)
  and drops the old classifier.
- `model.pretrained_ckpt=<trainlab .ckpt>` (any model): the backbone of an earlier trainlab run,
  matched by name and shape.

`model.pretrained_depth=k` loads only the first k backbone stages (trainlab.transfer.stages); the
rest of the backbone keeps its initialisation. The head is never loaded: it is new for the
data's classes and keeps what the init scheme gave it. So with `init=<scheme>` and pretrained
weights, the scheme initialises the head (and any stage not loaded); the loaded stages are the
pretrained ones. Every load logs a report of which tensors were loaded and which were not.

Reloading a checkpoint (eval, `ckpt_path=` resume) never comes here: the checkpoint holds the
weights, and Classifier builds its network without weight sources.
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

from trainlab.models.factory import network_config
from trainlab.run.checkpoints import trusted_checkpoint
from trainlab.transfer.stages import Split, resolve_depth, split_network
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
                f"  not loaded, beyond model.pretrained_depth={self.depth} (keep their init): {rest} "
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


# --- entry point ---------------------------------------------------------------------------


def load_pretrained(model: nn.Module, cfg: Mapping) -> LoadReport | None:
    """Load the weights the `model` config names into `model.net` (a trainlab Classifier).

    Called by trainlab.builders.build_model after the init scheme. Returns the report (also
    logged, and kept as `model.pretrained_report`), or None when there is nothing to load or
    when the run resumes from `ckpt_path` (the checkpoint has the weights).
    """
    model_cfg = dict(plain(cfg.get("model")) or {})  # only the nodes it reads are resolved
    transfer = (plain(cfg.get("transfer")) or {}).get("name")
    use_hub, file, ckpt = (
        bool(model_cfg.get("pretrained")),
        model_cfg.get("pretrained_file"),
        model_cfg.get("pretrained_ckpt"),
    )
    if not (use_hub or file or ckpt):
        if transfer not in (None, "scratch"):
            log.warning(
                f"transfer={transfer} with no pretrained weights (model.pretrained, model.pretrained_file, "
                "model.pretrained_ckpt): the backbone keeps its initialisation (a random-features baseline)."
            )
        return None
    if transfer == "scratch":
        raise ConfigError(
            "transfer=scratch trains from the initialisation, but the model config loads weights "
            f"({_sources_text(use_hub, file, ckpt)}): use transfer=finetune (everything trains) or "
            "another policy (linear_probe, partial, gradual), or drop the weights."
        )
    if ckpt and (use_hub or file):
        raise ConfigError(
            "model.pretrained_ckpt and model.pretrained/model.pretrained_file both name weights: choose one."
        )
    if cfg.get("ckpt_path"):
        log.info(
            "Resuming from ckpt_path: the checkpoint holds the weights; pretrained weights are not reloaded."
        )
        return None

    net = model.net
    split = split_network(net)
    depth = resolve_depth(model_cfg.get("pretrained_depth"), split, "model.pretrained_depth")
    if ckpt:
        state, source, notes = checkpoint_state(ckpt, plain(cfg.get("trusted_targets")))
    else:
        network = model.hparams["network"]
        state, source, notes = timm_state(model_cfg, network["input_shape"], network["num_classes"], file)
    report = copy_backbone(net, split, depth, state, source)
    report.notes += notes
    log.info(report.text())
    model.pretrained_report = report.as_dict()
    return report


def _sources_text(use_hub: bool, file: str | None, ckpt: str | None) -> str:
    named = [("model.pretrained=true", use_hub), (f"model.pretrained_file={file}", file)]
    named.append((f"model.pretrained_ckpt={ckpt}", ckpt))
    return ", ".join(text for text, on in named if on)


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
    checkpoint = trusted_checkpoint(path, "model.pretrained_ckpt", trusted_targets)
    state = checkpoint["state_dict"]
    tensors = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not tensors:
        raise ConfigError(
            f"model.pretrained_ckpt={str(path)!r} is not a trainlab checkpoint (no `net.` tensors)."
        )
    model = ((checkpoint.get("hyper_parameters") or {}).get("network") or {}).get("model") or {}
    what = model.get("name") or model.get("_target_", "?")
    return tensors, f"{path} ({what})", []


# --- timm hub weights and local files ------------------------------------------------------------


def timm_state(
    model_cfg: Mapping, input_shape: list[int], num_classes: int, file: str | None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """timm's pretrained weights of `model.name`, from `file` or the hub, as timm loads them:
    first conv adapted to the data's channels, old classifier dropped."""
    from trainlab.models.timm_backbone import create

    if model_cfg.get("_target_") != "trainlab.models.timm_backbone.timm_network":
        raise ConfigError(
            "model.pretrained and model.pretrained_file load timm weights and need model=timm; "
            "for trainlab's own models use model.pretrained_ckpt=<a trainlab checkpoint>."
        )
    name = model_cfg.get("name")
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.pretrained_file={file!r} is not a file.")
        weights, source = str(path.resolve()), str(path)
    else:
        weights, source = hub_weights(name)
    kwargs = {k: v for k, v in network_config(model_cfg).items() if k not in ("_target_", "name")}
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
        state, file_notes = _tensors_from_file(state, weights, f"model.pretrained_file={file!r}")
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
            f"timm has no pretrained weights for model.name={name!r}: use model.pretrained=false, "
            "or a weights file of yours with model.pretrained_file=<path>."
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
            f"model.pretrained=true needs the hub weights of {name!r} ({hub_id or url}), but this machine "
            f"is offline ({why}). Download them where there is internet, e.g. {download}, copy the "
            f"file here and pass model.pretrained_file=<path to the file>."
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
