"""timm's published weights for a timm model (`transfer.pretrained`, `transfer.pretrained_file`):
from a local file or timm's hub, loaded as timm loads them, and an offline machine told so at
once instead of after timm's retries (a hub request without a network retries for ~50 s).

`TimmTransfer.pretrained_state` (trainlab.models.timm_backbone) serves them to
trainlab.transfer.pretrained.load_pretrained, which copies them into the built network.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from pickle import UnpicklingError
from typing import Any
from urllib.parse import urlparse

import torch

from trainlab.layers.stages import some_keys
from trainlab.utils.config import ConfigError
from trainlab.utils.internet import host_reachable

log = logging.getLogger(__name__)

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


def timm_state(
    model_cfg: Mapping, input_shape: list[int], num_classes: int, file: str | None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """timm's pretrained weights of `model.name`, from `file` or the hub, as timm loads them:
    first conv adapted to the data's channels, old classifier dropped (what the timm adapter,
    trainlab.models.timm_backbone.TimmTransfer, provides as its `pretrained_state`)."""
    from safetensors import SafetensorError  # timm's dependency: its weights files

    from trainlab.models.timm_backbone import create  # the adapter's module imports this one

    name = model_cfg.get("name")
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"transfer.pretrained_file={file!r} is not a file.")
        if (
            path.stat().st_size == 0
        ):  # torch.load says only `EOFError` (an interrupted copy, a failed download)
            raise ConfigError(
                f"transfer.pretrained_file={file!r} is empty (0 bytes): copy or download the weights "
                "file again."
            )
        weights, source = str(path.resolve()), str(path)
    else:
        weights, source = hub_weights(name)
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("_target_", "name", "use_axes")}
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    with _capture_logs("timm.models._builder") as messages:
        try:
            net = create(name, tuple(input_shape), num_classes, pretrained=True, **kwargs)
        except ConfigError:  # trainlab's own, already naming the setting
            raise
        # a truncated or foreign file: torch.load raises EOFError, RuntimeError or pickle's
        # UnpicklingError, safetensors a SafetensorError
        except (
            RuntimeError,
            OSError,
            KeyError,
            EOFError,
            ValueError,
            UnpicklingError,
            SafetensorError,
        ) as error:
            setting = f"transfer.pretrained_file={file!r}" if file else f"model.name={name!r}"
            raise ConfigError(
                f"{setting}: timm could not load the weights of {name!r} from {source}: "
                f"{type(error).__name__}: {error}"
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
        notes.append(f"in the file but not in this network: {some_keys(extra)}")
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
