"""Build a run's pieces from the composed config: data, model, callbacks, loggers, trainer.

Every piece is a `_target_` config instantiated by Hydra; this module only wires them
together (the study axes meet in `build_model`, which also reports what it did).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab import checks
from trainlab.callbacks.compile_steps import CUDAGRAPH_MODES, CudaGraphSteps
from trainlab.callbacks.resume_state import ResumeState
from trainlab.callbacks.resumed_settings import ResumedSettings
from trainlab.checkpoints.atomic_io import AtomicCheckpointIO
from trainlab.checkpoints.confined_paths import ConfinedCheckpointPaths
from trainlab.checkpoints.reading import read_checkpoint, upgrade
from trainlab.checkpoints.resume_check import check_length, check_resumable
from trainlab.data.datamodule import ImageDataModule
from trainlab.init import apply_init
from trainlab.models.classifier import Classifier
from trainlab.tracking import naming
from trainlab.tracking.loggers import find_wandb_run_id, summarise_best
from trainlab.tracking.tracked_config import tracked_config
from trainlab.transfer.aliases import move_deprecated_weight_sources
from trainlab.transfer.pretrained import WeightSources, load_pretrained
from trainlab.utils.config import (
    STUDY_AXES,
    ConfigError,
    plain,
)
from trainlab.utils.library_patches import skip_idle_hooks

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")  # models need the source's shape and classes before they exist
    checks.check_data_fits_model(cfg, datamodule)
    return datamodule


def network_spec(cfg: DictConfig, datamodule: ImageDataModule) -> dict[str, Any]:
    """The arguments of `build_network` as plain data: the study axes plus the data's shape."""
    return {
        "model": plain(cfg.model),
        "norm": plain(cfg.norm),
        "activation": plain(cfg.activation),
        "input_shape": list(datamodule.input_shape),
        "num_classes": datamodule.num_classes,
    }


@dataclass
class BuildReport:
    """What building the model did, as plain data: the run records it in summary.json."""

    init: dict[str, float] = field(default_factory=dict)  # the init scheme's statistics (LSUV's variances)
    pretrained: dict[str, Any] | None = None  # the weights loaded (trainlab.transfer.pretrained's report)

    def summary_items(self) -> dict[str, Any]:
        """The entries of summary.json that hold something: `init_stats`, `pretrained`."""
        entries = {"init_stats": self.init, "pretrained": self.pretrained}
        return {key: value for key, value in entries.items() if value}


def build_model(
    cfg: DictConfig, datamodule: ImageDataModule, resume_from: Path | None = None
) -> tuple[pl.LightningModule, BuildReport]:
    """The Classifier, or the LightningModule a study names in `module` (e.g. experiment=noise_as_l2:
    a squared-error regression), built from the same network, optimizer and schedule configs;
    and what its init scheme and weight source did. With `resume_from` (the checkpoint the run
    resumes), refused before anything else when it is not the checkpoint's network
    (`check_resume`)."""
    move_deprecated_weight_sources(cfg)  # a no-op after checks.check_config; callers may skip it
    arguments = {
        "network": network_spec(cfg, datamodule),
        "optimizer": plain(cfg.optimizer),
        "scheduler": plain(cfg.scheduler) or None,
    }
    module = cfg.get("module")
    # _recursive_=False: the network, optimizer and schedule are built by the module itself
    if module:
        model = instantiate(module, **arguments, _recursive_=False)
    else:  # the loss and the mixing of training batches are the Classifier's
        model = Classifier(
            **arguments, loss=plain(cfg.get("loss")) or None, mix=plain(cfg.get("mix")) or None
        )
    if resume_from is not None:
        check_resume(model, resume_from, cfg.trainer)
    checks.check_batches_fit_network(cfg, model.net, datamodule)  # before init: LSUV draws batches
    init_stats = apply_init(model.net, cfg.init, datamodule)
    loaded = None
    if not cfg.get("ckpt_path"):  # after init: the weights replace it where they exist
        loaded = load_pretrained(
            WeightSources.from_config(cfg.get("transfer")),
            model.net,
            network=model.hparams["network"],
            trusted_targets=plain(cfg.get("trusted_targets")),
        )
    else:
        log.info(
            "Resuming from ckpt_path: the checkpoint holds the weights; pretrained weights are not reloaded."
        )
    if cfg.get("channels_last"):  # NHWC kernels (tensor cores); conv outputs follow the weights' layout
        model.net.to(memory_format=torch.channels_last)
    if cfg.get("compile"):  # in place: the state_dict keeps its keys, checkpoints stay portable
        # dynamic=False: each batch shape gets its own graph. Left to torch's default, the epoch's
        # last, smaller batch recompiles the network with a symbolic batch size, and that graph
        # then serves every later step (BENCHMARKS.md, compile=true)
        model.net.compile(mode=cfg.get("compile_mode") or "default", dynamic=False)
    return model, BuildReport(init=init_stats, pretrained=loaded.as_dict() if loaded else None)


def check_resume(model: pl.LightningModule, path: Path, trainer: DictConfig | None = None) -> None:
    """Refuse a resume whose network is not the checkpoint's, naming the settings that differ
    (`model.width: the checkpoint has 32, this run 64`), before any weight is loaded, or whose
    optimizer class or run length (`trainer`'s max_epochs, max_steps) cannot continue the
    checkpoint's; warn about settings that differ although the weights fit
    (trainlab.checkpoints.resume_check)."""
    checkpoint = read_checkpoint(path, "ckpt_path")
    upgrade(checkpoint)  # old module paths -> today's, as the run's config names them
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    origin = f"ckpt_path={str(path)!r}"
    for warning in check_resumable(checkpoint, dict(model.hparams), shapes, origin, model.strict_loading):
        log.warning(warning)
    if trainer is not None:
        check_length(checkpoint, trainer.get("max_epochs"), trainer.get("max_steps"), origin)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[pl.Callback]:
    configs = dict(cfg.get("callbacks") or {})
    if cfg.get("transfer"):  # the transfer option is its policy's callback config
        configs["transfer"] = cfg.transfer
    callbacks = [instantiate(c) for c in configs.values() if c is not None and c.get("_target_")]
    if cfg.get("compile") and cfg.get("compile_mode") in CUDAGRAPH_MODES:
        callbacks.append(CudaGraphSteps())
    if not has_logger:  # Lightning refuses a LearningRateMonitor with nowhere to log to
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return callbacks


def study_tags(cfg: DictConfig) -> list[str]:
    """The user's tags plus `axis:option` for each study axis chosen on the command line or
    default; a search's trial also `optuna:<study name>`, which gathers the trials of a study
    that several launches share (each launch is a W&B group of its own)."""
    tags = list(cfg.get("tags") or [])
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        tags += [
            f"{axis}:{hydra_cfg.runtime.choices[axis]}"
            for axis in STUDY_AXES
            if hydra_cfg.runtime.choices.get(axis)
        ]
        if cfg.get("optuna_trial") is not None and hydra_cfg.sweeper.get("study_name"):
            tags.append(f"optuna:{hydra_cfg.sweeper.study_name}")
    return tags


def build_loggers(cfg: DictConfig, resume_from: Path | None) -> list[Any]:
    """The configured loggers, each given the run's config as dashboards should see it
    (trainlab.tracking.tracked_config); a W&B run also its name, group, tags, command and best values."""
    configs = OmegaConf.create(plain(cfg.get("logger")) or {})
    wandb_cfg = configs.get("wandb")
    if wandb_cfg is not None:
        with open_dict(wandb_cfg):  # what the user set wins; null is filled in from the job
            wandb_cfg.tags = study_tags(cfg)
            if wandb_cfg.get("name") is None:
                wandb_cfg.name = naming.job_name(cfg)
            if wandb_cfg.get("group") is None:
                wandb_cfg.group = naming.run_group(cfg)
            if wandb_cfg.get("job_type") is None:
                wandb_cfg.job_type = cfg.get("task_name")
            # the job's own overrides as the run's command: an argument of trainlab's wandb_logger
            # (a WandbLogger given directly would pass it on to wandb.init, which has no such argument)
            target = wandb_cfg.get("_target_")
            takes_args = bool(target) and "args" in inspect.signature(get_object(target)).parameters
            if takes_args and wandb_cfg.get("args") is None:
                wandb_cfg.args = naming.job_command()
            run_id = find_wandb_run_id(resume_from.parent.parent) if resume_from else None
            if run_id:  # continue the W&B run of the checkpoint's run instead of starting another
                wandb_cfg.id, wandb_cfg.resume = run_id, "allow"
    loggers = [instantiate(c) for c in configs.values() if c is not None and c.get("_target_")]
    config = tracked_config(cfg)
    best = best_metrics(cfg)
    for logger in loggers:
        logger.log_hyperparams(config)
        if isinstance(logger, WandbLogger):
            summarise_best(logger, best)
    return loggers


def best_metrics(cfg: DictConfig) -> dict[str, str]:
    """{metric: "max" | "min"}: what the checkpoint callbacks keep the best of (`val/acc`, max)."""
    best = {}
    for callback in (plain(cfg.get("callbacks")) or {}).values():
        target = (callback or {}).get("_target_")
        if target and callback.get("monitor") and issubclass(get_object(target), ModelCheckpoint):
            best[callback["monitor"]] = callback.get("mode", "min")
    return best


# Trainer flags under which Lightning adds a callback of its own where the config has none.
# null (the default): only where the config has one, so that removing ours means none:
# callbacks.rich_progress_bar=null no bar (Lightning's is redrawn up to 100 times a second,
# 4-6% of a CPU step of the default CNN), callbacks=none no checkpoint files.
_LIGHTNING_DEFAULT_CALLBACKS = {
    "enable_progress_bar": pl.callbacks.ProgressBar,
    "enable_checkpointing": pl.callbacks.ModelCheckpoint,
}


def _plugins(cfg: DictConfig) -> list:
    """The trainer config's plugins, plus atomic checkpoint writes unless it names a CheckpointIO."""
    configured = cfg.trainer.get("plugins")
    if configured is None:
        plugins = []
    elif OmegaConf.is_list(configured):
        plugins = [instantiate(p) if OmegaConf.is_dict(p) else p for p in configured]
    else:
        plugins = [instantiate(configured) if OmegaConf.is_dict(configured) else configured]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


# What every trainer has, not a study's choice: exact resume (the generators, the epoch's metrics),
# the checkpoint's paths confined to the run, and a resume that applies the run's changed settings.
ALWAYS = (ResumeState, ConfinedCheckpointPaths, ResumedSettings)


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> pl.Trainer:
    settings = {
        flag: any(isinstance(c, kind) for c in callbacks)
        for flag, kind in _LIGHTNING_DEFAULT_CALLBACKS.items()
        if cfg.trainer.get(flag) is None
    }
    callbacks = [*callbacks, *(kind() for kind in ALWAYS if not any(isinstance(c, kind) for c in callbacks))]
    if cfg.trainer.get("sync_batchnorm") and _runs_on_cpu(cfg.trainer):
        log.warning(
            "trainer.sync_batchnorm=true on the CPU: torch's SyncBatchNorm runs on GPUs only, so each "
            "process normalises with its own batch's statistics (sync_batchnorm=false)."
        )
        settings["sync_batchnorm"] = False
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=_plugins(cfg), **settings
    )
    if cfg.get("skip_idle_callback_hooks", True):  # Lightning's own callbacks (added above) too
        skip_idle_hooks(trainer.callbacks)
    return trainer


def _runs_on_cpu(trainer: DictConfig) -> bool:
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def resolve_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """`ckpt_path`: null, a file, or `last` (this run directory's checkpoints/last.ckpt)."""
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if value == "last" else Path(value).expanduser()
    if not path.is_file():
        hint = (
            "ckpt_path=last resumes the run in this directory: re-run with hydra.run.dir=<the run's "
            "directory> ckpt_path=last, or give the checkpoint's path"
            if value == "last"
            else "give the path of a .ckpt file, e.g. logs/train/runs/<time>/checkpoints/last.ckpt"
        )
        raise ConfigError(f"ckpt_path={value!r}: no checkpoint at {path}; {hint}.")
    # Lightning resumes from the current config and reads only the checkpoint's state; reading it
    # here first (weights_only=True) says what is wrong with a bad file before anything is built
    read_checkpoint(path, "ckpt_path")
    return path
