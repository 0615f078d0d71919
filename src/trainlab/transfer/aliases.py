"""The weight sources' old home: `model.pretrained*`, now `transfer.pretrained*`.

`model.pretrained`, `model.pretrained_file`, `model.pretrained_ckpt` and `model.pretrained_depth`
(on the command line, in an experiment config, in a model config of one's own) still work: before
anything is built they are moved to the same leaf under `transfer`, with a FutureWarning that names
the new key. The same source set under both names with different values is an error. Afterwards
the `model` config is the architecture alone, which is what a checkpoint stores.
"""

from __future__ import annotations

import warnings
from typing import Any

from omegaconf import DictConfig, open_dict

from trainlab.utils.config import ConfigError

# leaf name -> its value when unset (conf/transfer/base/policy.yaml)
WEIGHT_SOURCES: dict[str, Any] = {
    "pretrained": False,
    "pretrained_file": None,
    "pretrained_ckpt": None,
    "pretrained_depth": None,
}


def move_deprecated_weight_sources(cfg: DictConfig) -> list[str]:
    """Move every `model.<source>` that is set to `transfer.<source>`, in place, and remove the
    aliases from `model`; return the keys moved (each one warned about)."""
    model = cfg.get("model")
    if model is None:
        return []
    moved = []
    for key, unset in WEIGHT_SOURCES.items():
        if key not in model:
            continue
        old = model.get(key)
        with open_dict(model):
            model.pop(key)
        if old is None:
            continue
        transfer = cfg.get("transfer")
        if transfer is None:
            raise ConfigError(
                f"model.{key}={old!r} (deprecated; now transfer.{key}) needs a transfer option: "
                "e.g. transfer=finetune."
            )
        new = transfer.get(key, unset)
        if new != unset and new != old:
            raise ConfigError(
                f"model.{key}={old!r} and transfer.{key}={new!r} name different weights: model.{key} "
                f"is the deprecated name of transfer.{key}; set transfer.{key} only."
            )
        with open_dict(transfer):
            transfer[key] = old
        warnings.warn(
            f"model.{key} is deprecated: the weight sources moved to the transfer group; use "
            f"transfer.{key}={old} (moved there for this run).",
            FutureWarning,
            stacklevel=2,
        )
        moved.append(key)
    return moved
