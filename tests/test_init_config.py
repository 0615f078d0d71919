"""The `init` config group end to end: every option composes and applies, runs train, fails clearly
on bad input, and a scheme from outside trainlab (one function + one YAML) trains with no edit."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainlab import checks
from trainlab.init import apply_init, schemes
from trainlab.models.factory import build_network
from trainlab.train import train
from trainlab.utils.compose import compose_run_config
from trainlab.utils.config import ConfigError

os.environ.setdefault("WANDB_MODE", "offline")
CONF = Path(__file__).resolve().parents[1] / "conf"
CONTRACT = [
    "default",
    "zeros",
    "constant",
    "normal",
    "uniform",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_normal",
    "orthogonal",
    "lsuv",
    "layerwise_pretrain",
    "fixup",
]
INIT_OPTIONS = sorted(p.stem for p in (CONF / "init").glob("*.yaml"))
QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_model_summary=false", "logger=none"]
TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "trainer.accelerator=cpu"]
TINY_RESNET = ["data=digits", "model=resnet", "model.depth=2", "model.width=4", "model.stages=2", "norm=none"]


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """The config of `python -m trainlab.train <overrides>`, with its run directory at run_dir."""
    return compose_run_config([*QUIET, *overrides], run_dir)


class Loader:
    """Stands in for the DataModule: train_dataloader() gives batches of (images, labels)."""

    def __init__(self, shape=(1, 8, 8), n=64) -> None:
        generator = torch.Generator().manual_seed(0)
        images, labels = torch.randn(n, *shape, generator=generator), torch.arange(n) % 10
        self.loader = DataLoader(TensorDataset(images, labels), batch_size=32)

    def train_dataloader(self) -> DataLoader:
        return self.loader


def test_every_contract_option_exists():
    assert set(INIT_OPTIONS) >= set(CONTRACT)


@pytest.mark.parametrize("name", INIT_OPTIONS)
def test_every_option_composes_passes_the_checks_and_applies(name, tmp_path):
    model = TINY_RESNET if name == "fixup" else TINY
    cfg = compose_train([*model, f"init={name}"], tmp_path)
    checks.check_config(cfg)
    assert cfg.init._target_.startswith("trainlab.init.") and cfg.init._partial_
    if name != "default":
        assert cfg.init.bias == 0.0  # init.bias for every scheme, default 0
    network = build_network(cfg.model, cfg.norm, cfg.activation, (1, 8, 8), 10)
    torch.manual_seed(0)
    stats = apply_init(network, cfg.init, Loader())
    assert isinstance(stats, dict)
    assert all(torch.isfinite(p).all() for p in network.parameters())


def test_an_unknown_init_lists_the_options(tmp_path):
    with pytest.raises(MissingConfigException) as error:
        compose_train(["init=kaiming"], tmp_path)
    message = str(error.value)
    assert "Could not find 'init/kaiming'" in message and "Available options in 'init'" in message
    assert all(f"\t{name}\n" in message for name in CONTRACT)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["init=normal", "init.std=-1"], r"init.std=-1 must be > 0"),
        (["init=uniform", "init.a=0"], r"init.a=0 must be > 0"),
        (
            ["init=fixup"],
            r"init=fixup needs a residual network; MLP has no residual branches\. Use model=resnet",
        ),
        (
            ["init=kaiming_normal", "init.mode=fan_sideways"],
            r"init.mode='fan_sideways' \(str\) does not fit .*kaiming_normal: expected one of 'fan_in', 'fan_out'",
        ),
        (["init=kaiming_uniform", "init.nonlinearity=swish"], r"init.nonlinearity='swish' is not one of"),
        (["init=lsuv", "init.tol=-0.1"], r"init.tol=-0.1 must be > 0"),
    ],
    ids=[
        "negative-std",
        "zero-bound",
        "fixup-on-mlp",
        "unknown-mode",
        "unknown-nonlinearity",
        "negative-tol",
    ],
)
def test_bad_input_fails_the_run_with_a_clear_message(overrides, message, tmp_path):
    cfg = compose_train([*TINY, *overrides], tmp_path / "run")
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"status": "failed"' in summary and "init" in summary


@pytest.mark.parametrize(
    "overrides",
    [
        [*TINY_RESNET, "init=fixup"],
        [*TINY, "init=lsuv", "activation=tanh"],
        [*TINY, "init=layerwise_pretrain", "init.max_batches=3", "norm=none"],
        [*TINY, "init=kaiming_normal", "activation=leaky_relu", "init.mode=fan_out"],
    ],
    ids=["fixup-resnet", "lsuv", "layerwise", "kaiming-leaky"],
)
def test_train_runs_with_the_scheme(overrides, tmp_path):
    summary = train(compose_train([*overrides, "debug=fdr"], tmp_path))
    assert summary["status"] == "completed" and summary["global_step"] == 1
    assert math.isfinite(summary["metrics"]["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "model"),
    # fixup needs residual branches: on mlp and cnn it is an error, tested above
    [(n, m) for n in INIT_OPTIONS for m in ("mlp", "cnn", "resnet") if n != "fixup" or m == "resnet"],
)
def test_every_scheme_with_every_model_trains(name, model, tmp_path):
    overrides = [
        "data=digits",
        f"model={model}",
        "model.depth=2",
        "model.width=8",
        f"init={name}",
        "debug=fdr",
    ]
    if name == "layerwise_pretrain":
        overrides.append("init.max_batches=2")
    if model == "resnet":
        overrides.append("norm=none")
    summary = train(compose_train(overrides, tmp_path))
    assert summary["status"] == "completed"


# --- extending from outside: one function (here) + one YAML (in a config dir of the user's) ---------

CALLS: list[dict] = []


def class_prior_head(network: nn.Module, batches, std: float = 0.02, bias: float = 0.0) -> dict[str, float]:
    """A user's scheme: N(0, std^2) weights, and the head's bias at the log class frequencies of the
    first training batch (so the first predictions match the class prior)."""
    schemes.normal(network, std=std, bias=bias)
    _, labels = next(iter(batches))
    head = network.head
    prior = torch.bincount(labels, minlength=head.out_features).float() / len(labels)
    with torch.no_grad():
        head.bias.copy_(torch.log(prior.clamp_min(1e-3)))
    CALLS.append({"std": std, "batch": len(labels), "head_bias": head.bias.detach().clone(), "prior": prior})
    return {"head/bias_mean": head.bias.mean().item()}


def test_a_scheme_added_from_outside_trains_with_no_edit_of_trainlab(tmp_path):
    user_conf = tmp_path / "my_conf"
    (user_conf / "init").mkdir(parents=True)
    (user_conf / "init" / "class_prior.yaml").write_text(
        f"_target_: {__name__}.class_prior_head\n_partial_: true\nstd: 0.02\nbias: 0.0\n"
    )
    CALLS.clear()
    cfg = compose_train(
        [
            f"hydra.searchpath=[file://{user_conf}]",
            *TINY,
            "init=class_prior",
            "init.std=0.03",  # a knob of the user's scheme, from the command line
            "trainer.max_steps=3",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
            "data.batch_size=32",
        ],
        tmp_path / "run",
    )
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert len(CALLS) == 1
    call = CALLS[0]
    assert call["std"] == 0.03 and call["batch"] == 32
    torch.testing.assert_close(call["head_bias"], torch.log(call["prior"].clamp_min(1e-3)))
