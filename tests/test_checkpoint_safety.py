"""A checkpoint is data, never code: no file makes trainlab run a callable it does not trust.

Each payload below is a checkpoint that loads with torch.load(weights_only=True) but names a
callable in a place trainlab builds from (data source, network parts, optimizer, transforms,
module class, a string that Hydra resolves): the payload never runs, and the error names the key
path and the target. Files that are not checkpoints, or describe another network, get errors
that name the file.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from trainlab.checkpoints.reading import upgrade
from trainlab.checkpoints.trusted_targets import ENV_VAR, check_targets, trusted_object
from trainlab.eval import evaluate, load_checkpoint
from trainlab.models.study_module import StudyModule
from trainlab.train import train
from trainlab.utils.config import ConfigError

from conftest import CONFIG_DIR, QUIET, compose_config

TINY = [
    "data=digits",
    "model=mlp",
    "model.depth=1",
    "model.width=8",
    "data.train_size=64",
    "augment=basic",
    "trainer.max_epochs=1",
    "logger=csv",
]
# Groups whose configs a checkpoint stores (the module's and the DataModule's arguments).
CHECKPOINT_GROUPS = ("data", "model", "norm", "activation", "optimizer", "scheduler", "augment", "module")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A real checkpoint of the real entry point, and its run's summary."""
    root = tmp_path_factory.mktemp("trained")
    summary = train(compose_config([*QUIET, *TINY], root / "run", log_dir=root))
    GlobalHydra.instance().clear()
    return root / "run" / "checkpoints" / "last.ckpt", summary


def craft(base: Path, path: Path, edit) -> Path:
    """A copy of the checkpoint `base`, changed by `edit(checkpoint)`, saved as torch.save does."""
    checkpoint = copy.deepcopy(torch.load(base, map_location="cpu", weights_only=True))
    edit(checkpoint)
    torch.save(checkpoint, path)
    torch.load(path, weights_only=True)  # the payload passes PyTorch's own safety check
    return path


def run_eval(make_cfg, path: Path, *overrides: str) -> dict:
    return evaluate(make_cfg(f"ckpt_path={path}", *overrides, run="eval", config_name="eval"))


def at(keys: str, value):
    """An edit of a checkpoint: set the dotted key path `keys` to `value(tmp)`."""

    def edit(checkpoint: dict, tmp: Path) -> None:
        *parents, last = keys.split(".")
        node = checkpoint
        for key in parents:
            node = node[key]
        node[last] = value(tmp)

    return edit


def in_old_arguments(checkpoint: dict, tmp: Path) -> None:
    """The network config under `module_arguments` (Lightning 0.7's key, still merged into the
    module's arguments), its norm a payload."""
    network = checkpoint["hyper_parameters"].pop("network")
    network["norm"] = {"_target_": "builtins.open", "file": str(tmp / "victim.txt"), "mode": "w"}
    checkpoint["module_arguments"] = {"network": network}


# --- payloads in every place trainlab builds from -----------------------------------------------

PAYLOADS = {
    # (the edit that plants it, the key path the error names, the target)
    "data source runs a shell command": (
        at(
            "datamodule_hyper_parameters.source",
            lambda tmp: {"_target_": "os.system", "command": f"touch {tmp / 'pwned'}"},
        ),
        "datamodule_hyper_parameters.source._target_",
        "os.system",
    ),
    "norm truncates a file": (
        at(
            "hyper_parameters.network.norm",
            lambda tmp: {"_target_": "builtins.open", "file": str(tmp / "victim.txt"), "mode": "w"},
        ),
        "hyper_parameters.network.norm._target_",
        "builtins.open",
    ),
    "activation copies a file": (
        at(
            "hyper_parameters.network.activation",
            lambda tmp: {
                "_target_": "shutil.copyfile",
                "src": str(tmp / "victim.txt"),
                "dst": str(tmp / "pwned"),
            },
        ),
        "hyper_parameters.network.activation._target_",
        "shutil.copyfile",
    ),
    "optimizer partial runs a process": (
        at(
            "hyper_parameters.optimizer",
            lambda tmp: {
                "_target_": "subprocess.run",
                "_partial_": True,
                "args": ["touch", str(tmp / "pwned")],
            },
        ),
        "hyper_parameters.optimizer._target_",
        "subprocess.run",
    ),
    "a transform inside a composition imports a module": (
        at(
            "datamodule_hyper_parameters.augment.transforms",
            lambda tmp: [{"_target_": "albumentations.OneOf", "transforms": [{"_target_": "evil_mod.Blur"}]}],
        ),
        "datamodule_hyper_parameters.augment.transforms[0].transforms[0]._target_",
        "evil_mod.Blur",
    ),
    "a trusted module's argument is an interpolation that builds a payload": (
        at(
            "hyper_parameters.network.norm",
            lambda tmp: {
                "_target_": "torch.nn.Identity",
                "_partial_": True,
                "x": f"${{oc.create:{{_target_: shutil.copyfile, src: '{tmp / 'victim.txt'}', dst: '{tmp / 'pwned'}'}}}}",
            },
        ),
        "hyper_parameters.network.norm.x",
        "${oc.create:",
    ),
    "arguments under Lightning 0.7's key, which Lightning still merges in": (
        in_old_arguments,
        "module_arguments.network.norm._target_",
        "builtins.open",
    ),
    "LightningCLI's instantiator in the module's arguments": (
        at("hyper_parameters._instantiator", lambda tmp: "lightning.pytorch.cli.instantiate_module"),
        "hyper_parameters._instantiator",
        "instantiate_module",
    ),
    "module class key names a function": (
        at("trainlab_module", lambda tmp: "os.system"),
        "trainlab_module",
        "os.system",
    ),
    "module class key names a class outside trainlab": (
        at("trainlab_module", lambda tmp: "subprocess.Popen"),
        "trainlab_module",
        "subprocess.Popen",
    ),
}


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """A victim file that must keep its content, and an importable module that leaves a marker
    when imported: payloads must neither write, nor copy, nor import."""
    (tmp_path / "victim.txt").write_text("keep me")
    (tmp_path / "evil_mod.py").write_text(
        f"open({str(tmp_path / 'pwned')!r}, 'w').close()\nimport albumentations\nBlur = albumentations.Blur\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def raised(call) -> Exception | None:
    """What `call()` raised (None if nothing): the test first checks that no payload ran."""
    try:
        call()
    except Exception as error:
        return error
    return None


def assert_untouched(tmp: Path) -> None:
    assert not (tmp / "pwned").exists(), "the payload ran"
    assert (tmp / "victim.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_eval_refuses_a_payload_before_it_runs(name, trained, make_cfg, sandbox):
    plant, key, target = PAYLOADS[name]
    path = craft(trained[0], sandbox / "payload.ckpt", lambda c: plant(c, sandbox))
    error = raised(lambda: run_eval(make_cfg, path))
    assert_untouched(sandbox)
    assert isinstance(error, ConfigError), error
    assert f"ckpt_path='{path}'" in str(error) and f"{key}=" in str(error) and target in str(error)


def test_a_payload_in_a_pretrained_checkpoint_is_refused(trained, make_cfg, sandbox):
    plant, key, target = PAYLOADS["data source runs a shell command"]
    path = craft(trained[0], sandbox / "payload.ckpt", lambda c: plant(c, sandbox))
    error = raised(lambda: train(make_cfg(*TINY, "transfer=finetune", f"transfer.pretrained_ckpt={path}")))
    assert_untouched(sandbox)
    assert isinstance(error, ConfigError), error
    assert f"transfer.pretrained_ckpt='{path}': {key}='{target}' is not a trusted target" in str(error)


def test_module_class_must_be_a_trainlab_module(trained, make_cfg, tmp_path):
    path = craft(trained[0], tmp_path / "relu.ckpt", lambda c: c.update(trainlab_module="torch.nn.ReLU"))
    with pytest.raises(ConfigError, match="trainlab_module='torch.nn.ReLU' is not a trainlab module"):
        run_eval(make_cfg, path)


# --- a normal checkpoint, and code the user trusts ---------------------------------------------


def test_a_checkpoint_trainlab_wrote_still_evaluates(trained, make_cfg):
    path, summary = trained
    result = run_eval(make_cfg, path)
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)


def test_user_trusted_package_builds(trained, make_cfg, tmp_path, monkeypatch):
    (tmp_path / "my_acts.py").write_text("import torch\n\nclass MyReLU(torch.nn.ReLU):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    activation = {"_target_": "my_acts.MyReLU", "_partial_": True}
    path = craft(
        trained[0],
        tmp_path / "mine.ckpt",
        lambda c: at("hyper_parameters.network.activation", lambda tmp: activation)(c, tmp_path),
    )
    with pytest.raises(
        ConfigError, match=r"hyper_parameters.network.activation._target_='my_acts.MyReLU' is not a trusted"
    ):
        load_checkpoint(path)
    result = run_eval(make_cfg, path, "trusted_targets=[my_acts]")
    assert result["status"] == "completed"
    assert result["metrics"]["test/acc"] == pytest.approx(trained[1]["metrics"]["test/acc"], abs=1e-6)
    monkeypatch.setenv(ENV_VAR, "other_pkg, my_acts.MyReLU")  # or by environment, one object
    model, _ = load_checkpoint(path)
    assert any(type(m).__name__ == "MyReLU" for m in model.modules())


# --- files that are not (trainlab) checkpoints ---------------------------------------------------


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_files_that_are_not_checkpoints_get_errors_naming_them(make_cfg, tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello\n")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    cases = {
        "notes.ckpt": "is not a PyTorch checkpoint",
        "empty.ckpt": "is not a PyTorch checkpoint",
        "plain.ckpt": "is a PyTorch file but not a Lightning checkpoint",
        "missing.ckpt": "is not a file",
    }
    for name, problem in cases.items():
        with pytest.raises(ConfigError, match=re.escape(f"ckpt_path='{tmp_path / name}' {problem}")):
            run_eval(make_cfg, tmp_path / name)
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("entry", ["eval", "resume"])
def test_a_pickled_payload_never_runs(entry, make_cfg, tmp_path, monkeypatch):
    # torch.load's own default is weights_only=True, but this variable turns it off where a call
    # does not say weights_only=True explicitly (Lightning's resume did not)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "epoch": _Shell(marker)}, tmp_path / "shell.ckpt")
    with (tmp_path / "raw.ckpt").open("wb") as file:
        pickle.dump(_Shell(marker), file)
    for name in ("shell.ckpt", "raw.ckpt"):
        path = tmp_path / name
        if entry == "eval":
            error = raised(lambda path=path: run_eval(make_cfg, path))
        else:
            error = raised(lambda path=path: train(make_cfg(*TINY, f"ckpt_path={path}")))
        GlobalHydra.instance().clear()
        assert not marker.exists(), "the payload ran"
        assert isinstance(error, ConfigError), error
        assert f"ckpt_path='{path}' holds pickled Python objects" in str(error)


def test_resume_from_a_file_that_is_no_checkpoint(make_cfg, tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello\n")
    notes = re.escape(f"ckpt_path='{tmp_path / 'notes.ckpt'}' is not a PyTorch checkpoint")
    with pytest.raises(ConfigError, match=notes):
        train(make_cfg(*TINY, f"ckpt_path={tmp_path / 'notes.ckpt'}"))


def test_checkpoint_of_another_network(trained, make_cfg, tmp_path):
    wider = craft(
        trained[0],
        tmp_path / "wider.ckpt",
        lambda c: at("hyper_parameters.network.model.width", lambda tmp: 16)(c, tmp_path),
    )
    with pytest.raises(
        ConfigError, match=r"weights do not fit the network its hyperparameters describe.*size mismatch"
    ):
        run_eval(make_cfg, wider)
    GlobalHydra.instance().clear()

    def foreign(checkpoint: dict) -> None:  # another Lightning project's checkpoint
        for key in ("hyper_parameters", "datamodule_hyper_parameters", "trainlab_module"):
            checkpoint.pop(key)

    other = craft(trained[0], tmp_path / "other.ckpt", foreign)
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path='{other}' was not written by trainlab")):
        run_eval(make_cfg, other)


@pytest.mark.parametrize(
    ("key", "value", "refused"),
    [
        ("width", 10**7, r"weights do not fit the network its hyperparameters describe \(size mismatch: "),
        ("width", 10**12, r"describes 78,000,000,000,011 values, its weights hold 635\. Nothing was built"),
        ("depth", 10**9, r"has more tensors than its weights \(more than 80; "),
    ],
)
def test_a_network_described_by_a_checkpoint_is_sized_before_it_is_allocated(
    key, value, refused, trained, make_cfg, tmp_path, monkeypatch
):
    """An allow-listed network with enormous sizes is refused before anything is built: the
    module (and its network) is never constructed, so no memory is taken."""
    huge = craft(
        trained[0],
        tmp_path / "huge.ckpt",
        lambda c: at(f"hyper_parameters.network.model.{key}", lambda tmp: value)(c, tmp_path),
    )
    built = []
    monkeypatch.setattr(StudyModule, "__init__", lambda self, *a, **k: built.append(a))
    with pytest.raises(ConfigError, match=refused):
        run_eval(make_cfg, huge)
    assert not built


# --- the allow-list -------------------------------------------------------------------------------


def _config_targets() -> list[tuple[str, str]]:
    """(file: key path, target) of every `_target_` in conf/ that a checkpoint can store."""
    import yaml

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str) and "${" not in value:
                    yield where, value
                else:
                    yield from walk(value, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from walk(item, f"{where}[{index}]")

    found = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.relative_to(CONFIG_DIR).parts[0]
        tree = yaml.safe_load(path.read_text()) or {}
        if group in CHECKPOINT_GROUPS:
            tree = {group: tree}
        elif group == "experiment":  # a ready study sets its axes (and `module`) at the top level
            tree = {k: v for k, v in tree.items() if k in CHECKPOINT_GROUPS}
        else:
            continue
        if isinstance(tree.get("data"), dict):  # the DataModule's own class is not stored, its arguments are
            tree["data"] = {k: v for k, v in tree["data"].items() if k != "_target_"}
        found += [(f"{path.relative_to(CONFIG_DIR)}: {where}", target) for where, target in walk(tree, "")]
    return found


def test_every_target_a_shipped_config_stores_in_a_checkpoint_is_trusted():
    found = _config_targets()
    assert len(found) > 60  # the scan sees the configs (sources, models, norms, transforms, ...)
    shipped = {"torch.nn.ReLU", "torch.optim.SGD", "albumentations.OneOf", "trainlab.data.sources.digits"}
    shipped.add("trainlab.models.regression.NoisyRegression")  # an experiment's `module`
    assert shipped <= {t for _, t in found}
    check_targets({where: {"_target_": target} for where, target in found})


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("torch.load", "is not a trusted target"),
        ("torch.hub.load", "is not a trusted target"),
        ("trainlab.utils.printing.print_config_tree", "is not a trusted target"),  # writes a file
        ("torch.nn.modules.module.torch.load", "is torch.serialization.load, which is not a trusted target"),
        ("trainlab.models.factory.instantiate", "is hydra._internal.instantiate._instantiate2.instantiate"),
        ("albumentations.core.serialization.save", "is not one of the Albumentations transforms"),
        ("torch.nn.init.kaiming_normal_", "is not one of the torch.nn modules"),
        ("trainlab.models.blocks.POSITIONS", "is not a class or a function"),
        ("torch.nn", "is not a class or a function"),
        (5, "is not a dotted name"),
    ],
)
def test_allow_list_is_precise(target, problem):
    with pytest.raises(ConfigError, match=re.escape(f"model._target_={target!r} {problem}")):
        check_targets({"model": {"_target_": target}})


def test_trusted_names_are_checked_and_resolved():
    assert trusted_object("trainlab.models.classifier.Classifier", "k").__name__ == "Classifier"
    with pytest.raises(ConfigError, match="k='collections.OrderedDict' is not a trusted target"):
        trusted_object("collections.OrderedDict", "k")
    assert trusted_object("collections.OrderedDict", "k", trusted=["collections."]) is OrderedDict
    # what the user trusts is trusted whole, also inside a package trusted only for some kinds
    init = trusted_object("torch.nn.init.kaiming_normal_", "k", trusted=["torch.nn.init"])
    assert init is torch.nn.init.kaiming_normal_
    with pytest.raises(ConfigError, match="'my pkg' is not a dotted name"):
        check_targets({}, trusted=["my pkg"])


def test_a_checkpoint_naming_modules_that_have_moved_still_evaluates(trained, tmp_path, make_cfg):
    """Checkpoints written before trainlab.nn, trainlab.data.augment and trainlab.models.schedulers
    moved name their old paths: they are upgraded on reading and evaluate as before."""
    checkpoint, summary = trained

    def old_paths(ckpt: dict) -> None:
        hparams = ckpt["hyper_parameters"]
        assert hparams["scheduler"]["_target_"] == "trainlab.optim.schedulers.cosine"
        hparams["scheduler"]["_target_"] = "trainlab.models.schedulers.cosine"
        transforms = ckpt["datamodule_hyper_parameters"]["augment"]["transforms"]
        transforms.append({"_target_": "trainlab.data.augment.PadAndRandomCrop", "padding": 0.1})

    old = craft(checkpoint, tmp_path / "old.ckpt", old_paths)
    model, datamodule = load_checkpoint(old)
    assert model.hparams.scheduler["_target_"] == "trainlab.optim.schedulers.cosine"
    assert datamodule.augment.transforms[-1]["_target_"] == "trainlab.data.transforms.PadAndRandomCrop"
    result = run_eval(make_cfg, old)
    assert result["metrics"]["test/acc"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    stored = {"network": {"activation": {"_target_": "trainlab.nn.maxout.Maxout", "pieces": 2}}}
    assert upgrade(ckpt := {"hyper_parameters": stored}) and ckpt["hyper_parameters"]["network"] == {
        "activation": {"_target_": "trainlab.activations.maxout.Maxout", "pieces": 2}
    }


def test_a_config_naming_a_moved_module_is_told_the_new_path(make_cfg):
    from trainlab import checks

    cfg = make_cfg(*TINY[:4], "activation=maxout", "activation._target_=trainlab.nn.maxout.Maxout")
    with pytest.raises(ConfigError, match=r"it moved: use _target_: trainlab\.activations\.maxout\.Maxout"):
        checks.check_config(cfg)
