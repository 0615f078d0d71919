"""Checks of a composed config before anything is built: every `_target_` against its
signature, the seed, the optimizer's values, the monitored metrics, and what only the data's size
can tell. Each names the key at fault and the valid choices (docs/errors.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from trainlab.data.datamodule import ImageDataModule
from trainlab.data.pipelines import AugmentSettings, build_augmentations
from trainlab.layers.traits import normalises_over_batch
from trainlab.models.classifier import Classifier
from trainlab.norm.ghost_batchnorm import check_virtual_batches
from trainlab.transfer.aliases import move_deprecated_weight_sources
from trainlab.utils.config import CALLED_LATER, ConfigError, check_arguments, plain, require_partial
from trainlab.utils.resolvers import directory_name

log = logging.getLogger(__name__)

# seed_everything takes 0..2**32-1 and replaces anything else by a random seed with a warning
MAX_SEED = 2**32 - 1


def check_config(cfg: DictConfig) -> None:
    """Check every `_target_` config against its signature before anything is built.

    First the deprecated `model.pretrained*` are moved to `transfer.*` (with a warning), so that
    the checks and everything built after them see the weight sources in one place."""
    move_deprecated_weight_sources(cfg)
    if cfg.get("task_name") is not None:  # a run's directory was made from it: also checked there
        directory_name(cfg.task_name)
    check_seed(cfg.get("seed"))
    for group in CALLED_LATER:  # init, norm, activation: functions trainlab calls later
        require_partial(group, cfg.get(group))
    if cfg.get("augment") is not None:  # names the bad transform, suggests close names
        build_augmentations(AugmentSettings.from_config(cfg.augment).transforms)
    for group in (
        "data",
        "model",
        "activation",
        "optimizer",
        "scheduler",
        "loss",
        "mix",
        "init",
        "transfer",
        "trainer",
        "callbacks",
        "logger",
        "module",
    ):
        check_arguments(cfg.get(group), group)
    norm = plain(cfg.get("norm")) or {}
    position = norm.pop("position", "pre_act")
    if position not in ("pre_act", "post_act"):
        raise ConfigError(f"norm.position={position!r} is not one of ['pre_act', 'post_act'].")
    check_arguments(norm, "norm")
    check_optimizer(cfg)
    check_trainer(cfg.get("trainer"))
    check_monitors(cfg)
    check_compile_mode(cfg.get("compile_mode"))
    if cfg.get("module") and cfg.get("mix"):  # the Classifier's: a study's own module never sees it
        raise ConfigError(
            "mix: batch mixing is the Classifier's, and this run trains `module` "
            f"({cfg.module.get('_target_')}); use mix=none, or module=null."
        )
    for key in ("max_epochs", "max_steps"):
        if (cfg.get("trainer") or {}).get(key) == 0:
            log.warning(f"trainer.{key}=0: nothing is trained; the test uses the initial weights.")


# torch.compile's modes (torch._inductor.list_mode_options()), for `compile_mode`
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: Any) -> None:
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(
            f"compile_mode={mode!r} is not a torch.compile mode; choose one of {', '.join(COMPILE_MODES)} "
            "(reduce-overhead: CUDA graphs, for small steps on a GPU; it applies with compile=true)."
        )


def check_seed(seed: Any) -> None:
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"seed={seed!r} must be an integer from 0 to {MAX_SEED} (e.g. seed=42), or null to draw one."
        )


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer once on a dummy parameter: torch checks its values (lr >= 0, momentum >= 0,
    betas in [0, 1), ...) only when the optimizer is built, at the start of fit, and its messages
    ("Invalid learning rate: -0.1") do not say which setting."""
    node = plain(cfg.get("optimizer"))
    if not node:
        return
    if node.get("lr") == 0:
        log.warning(
            "optimizer.lr=0: no weight changes (only BatchNorm's running statistics do); give a rate "
            "> 0, e.g. from `python -m trainlab.lr_find`."
        )
    try:
        instantiate(node)([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, IndexError, TypeError) as error:  # OmegaConf's index errors are IndexErrors
        values = ", ".join(f"optimizer.{k}={v}" for k, v in node.items() if not k.startswith("_"))
        raise ConfigError(f"optimizer ({node['_target_']}): {error} ({values}).") from error


def _count(least: int, none: bool = False) -> Callable[[Any], bool]:
    return lambda v: (none and v is None) or (isinstance(v, int) and v >= least)


def _fraction_or_count(v: Any) -> bool:
    """Lightning's limit_*_batches: a float in [0, 1] is a fraction of the batches, an int (or a whole
    float above 1) a number of them (lightning.pytorch.trainer.setup._determine_batch_limits)."""
    if isinstance(v, float):
        return 0.0 <= v <= 1.0 or (v > 1 and v.is_integer())
    return v is None or (isinstance(v, int) and v >= 0)


def _interval(v: Any) -> bool:
    """val_check_interval: a fraction of an epoch in (0, 1], a number of batches >= 1, or a time."""
    if isinstance(v, float):
        return 0.0 < v <= 1.0
    return v is None or isinstance(v, str | dict) or (isinstance(v, int) and v >= 1)


# Lightning's numeric trainer knobs and the values it can use. Lightning checks few of them, and
# then names its own argument, not the config key: 0 ends in a ZeroDivisionError in the fit loop
# (accumulate_grad_batches, val_check_interval, log_every_n_steps, check_val_every_n_epoch), a
# negative gradient_clip_val is taken without a word and clips nothing (Precision.clip_gradients
# returns for clip_val <= 0).
TRAINER_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_epochs": (_count(-1, none=True), "an integer >= 0, -1 (no epoch limit) or null"),
    "min_epochs": (_count(0, none=True), "an integer >= 0 or null"),
    "max_steps": (_count(-1), "an integer >= 0, or -1 (bounded by trainer.max_epochs)"),
    "min_steps": (_count(0, none=True), "an integer >= 0 or null"),
    "accumulate_grad_batches": (_count(1), "an integer >= 1 (1: an optimizer step per batch)"),
    "log_every_n_steps": (_count(1, none=True), "an integer >= 1 or null (Lightning's 50)"),
    "check_val_every_n_epoch": (
        _count(1, none=True),
        "an integer >= 1, or null (validate every trainer.val_check_interval batches, across epochs)",
    ),
    "val_check_interval": (
        _interval,
        "a fraction of an epoch in (0, 1], a number of batches >= 1, a time, or null (once per epoch)",
    ),
    "num_sanity_val_steps": (_count(-1, none=True), "an integer >= 0, -1 (all) or null"),
    "reload_dataloaders_every_n_epochs": (_count(0), "an integer >= 0 (0: never)"),
    "num_nodes": (_count(1), "an integer >= 1"),
    "gradient_clip_val": (
        lambda v: v is None or (isinstance(v, int | float) and v >= 0),
        "a number >= 0 (the largest gradient norm, or value with gradient_clip_algorithm=value), "
        "or null or 0 (no clipping)",
    ),
    **{
        f"limit_{split}_batches": (
            _fraction_or_count,
            "a fraction of the batches in [0.0, 1.0] (a float), a number of batches >= 0 (an int), or null",
        )
        for split in ("train", "val", "test", "predict")
    },
    "overfit_batches": (_fraction_or_count, "a fraction in [0.0, 1.0] or a number of batches >= 0 (0: off)"),
}


def check_trainer(trainer: Any) -> None:
    """The trainer's numeric knobs within the ranges Lightning can use (TRAINER_RANGES); their types
    were checked against the Trainer's signature before."""
    trainer = plain(trainer) or {}
    for key, (valid, choices) in TRAINER_RANGES.items():
        if key in trainer and not isinstance(trainer[key], bool) and not valid(trainer[key]):
            raise ConfigError(f"trainer.{key}={trainer[key]!r} is out of range: give {choices}.")


def module_class(cfg: DictConfig) -> type:
    """The LightningModule class the run trains: `module._target_`, else the Classifier."""
    module = cfg.get("module")
    return get_object(module["_target_"]) if module else Classifier


def check_monitors(cfg: DictConfig) -> None:
    """A callback's `monitor` must be a metric the module logs (its LOGGED_METRICS); otherwise
    ModelCheckpoint fails after the first epoch and EarlyStopping at its first check."""
    logged = getattr(module_class(cfg), "LOGGED_METRICS", None)
    if not logged:  # a module that does not declare its metrics cannot be checked
        return
    for name, callback in (plain(cfg.get("callbacks")) or {}).items():
        monitor = (callback or {}).get("monitor")
        if monitor is not None and monitor not in logged:
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor!r} is not a metric this run logs; "
                f"{module_class(cfg).__name__} logs: {', '.join(logged)}."
            )


def check_data_fits_model(cfg: DictConfig, datamodule: ImageDataModule) -> None:
    """What only the data's size can tell: an epoch with no batch, the batches ghost batch norm must split."""
    check_epoch_has_batches(datamodule)
    virtual_batch_size = (cfg.get("norm") or {}).get("virtual_batch_size")
    if virtual_batch_size:
        _, train_labels = datamodule.splits["train"]
        hp = datamodule.hparams
        check_virtual_batches(int(virtual_batch_size), len(train_labels), hp.batch_size, hp.drop_last)


def _split_sizes(datamodule: ImageDataModule) -> str:
    hp = datamodule.hparams
    return (
        f"{datamodule.train_examples()} training examples in batches of data.batch_size={hp.batch_size}, "
        f"data.drop_last={str(hp.drop_last).lower()}"
    )


def check_epoch_has_batches(datamodule: ImageDataModule) -> None:
    """drop_last with a batch larger than the training split leaves no batch at all: Lightning then
    'trains' 0 steps and the run ends `completed`."""
    hp = datamodule.hparams
    if hp.drop_last and datamodule.train_examples() < hp.batch_size:
        raise ConfigError(
            f"data.batch_size={hp.batch_size} is larger than the training split with data.drop_last=true "
            f"({_split_sizes(datamodule)}): every epoch would be empty. Lower data.batch_size to at most "
            f"{datamodule.train_examples()}, raise data.train_size, or set data.drop_last=false."
        )


def _processes(trainer: Any) -> int:
    """How many processes share the training split: trainer.devices x trainer.num_nodes where they
    are numbers (`auto` and -1 are known only once the trainer exists: 1)."""
    trainer = plain(trainer) or {}
    devices = trainer.get("devices", 1)
    devices = len(devices) if isinstance(devices, list) else devices
    nodes = trainer.get("num_nodes", 1)
    return max(devices, 1) * max(nodes, 1) if isinstance(devices, int) and isinstance(nodes, int) else 1


def single_value_norms(network: torch.nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """The layers that normalise over the batch (traits.normalises_over_batch) and would see one value
    per channel in a batch of one example (vectors, or 1x1 maps): a forward pass of one blank example
    in eval mode (no statistic is updated), every module's mode restored after."""
    found: list[str] = []

    def look(name: str) -> Callable:
        def hook(module: torch.nn.Module, args: tuple) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.numel() == x.shape[1]:
                found.append(f"{name} ({type(module).__name__})")

        return hook

    hooks = [
        module.register_forward_pre_hook(look(name))
        for name, module in network.named_modules()
        if normalises_over_batch(module)
    ]
    if not hooks:
        return []
    modes = {module: module.training for module in network.modules()}
    parameter = next(network.parameters(), None)
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros(1, *input_shape, device=parameter.device if parameter is not None else None))
    except Exception as error:  # a network of a study's own that wants other inputs: cannot tell
        log.debug(f"The batch-of-one probe could not run the network ({error}); not checked.")
        return []
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    return found


def check_batches_fit_network(cfg: DictConfig, network: torch.nn.Module, datamodule: ImageDataModule) -> None:
    """A training batch of one example under a norm that normalises over the batch (BatchNorm, the
    default) ends in "Expected more than 1 value per channel when training" where that norm sees
    vectors or 1x1 maps. Every batch of one (data.batch_size=1) is refused; a last batch of one
    (e.g. data=digits data.batch_size=4: 1293 = 323 x 4 + 1) is dropped with a warning, which costs
    one example per epoch, a different one each epoch."""
    hp = datamodule.hparams
    examples = -(-datamodule.train_examples() // _processes(cfg.get("trainer")))  # per process
    every_batch = hp.batch_size == 1 or examples == 1
    last_batch = examples > hp.batch_size and examples % hp.batch_size == 1 and not datamodule.drop_last
    if not (every_batch or last_batch):
        return
    layers = single_value_norms(network, tuple(datamodule.input_shape))
    if not layers:
        return
    where = f"{', '.join(layers[:3])}{', ...' if len(layers) > 3 else ''} would see one value per channel"
    if every_batch:
        raise ConfigError(
            f"data.batch_size={hp.batch_size}: every training batch holds one example ({_split_sizes(datamodule)}), "
            f"and this network normalises over the batch: {where}, which has no variance. Use "
            "data.batch_size=2 or more, or a norm without batch statistics (norm=layernorm, norm=groupnorm, norm=none)."
        )
    datamodule.drop_last_of_one()
    log.warning(
        f"The last training batch of each epoch holds one example ({_split_sizes(datamodule)}), and this "
        f"network normalises over the batch: {where}. That batch is dropped (one example an epoch, a "
        "different one each epoch); to keep it, change data.batch_size or data.train_size, or set "
        "data.drop_last=true to drop any smaller last batch."
    )
