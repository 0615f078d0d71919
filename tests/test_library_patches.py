"""trainlab's patches of other libraries (trainlab.utils.library_patches): for each, the library's
own behaviour that the patch relies on (these fail when the library changes under the patch), what
the patch changes, and the fence around them all: the setting, the tested versions, the restore."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import OmegaConf
from wandb.sdk import wandb_run

from trainlab.utils import library_patches
from trainlab.utils.library_patches import LAUNCH_STAGING_MODULE, PATCHES, SETTING

from conftest import QUIET, run_cli


@pytest.fixture(autouse=True)
def libraries_as_they_ship(monkeypatch):
    """No patch in place before or after a test, whatever the environment says."""
    monkeypatch.delenv(SETTING, raising=False)
    library_patches.restore()
    yield
    library_patches.restore()


# W&B: Run._detect_and_apply_job_inputs ------------------------------------------------------------


def test_wandb_init_asks_run_for_launch_inputs_once(tmp_path, monkeypatch):
    """The method the patch replaces is what a run start calls, once, with no argument."""
    own = wandb_run.Run.__dict__["_detect_and_apply_job_inputs"]
    calls = []

    def spy(self):
        calls.append(self)
        return own(self)

    monkeypatch.setattr(wandb_run.Run, "_detect_and_apply_job_inputs", spy)
    import wandb

    settings = wandb.Settings(x_disable_stats=True, console="off", silent=True)
    run = wandb.init(mode="offline", dir=str(tmp_path), settings=settings)
    run.finish()
    assert calls == [run]


def test_wandb_stages_launch_inputs_only_in_the_module_its_run_start_imports(tmp_path):
    """In a fresh process: a patched run start leaves W&B Launch unimported; W&B's own method
    imports the staging module (what the patch saves), and W&B Launch stages its inputs in that
    module's singleton, so that nothing can be staged while the module is not imported (what
    makes skipping it safe)."""
    script = textwrap.dedent(
        f"""
        import sys
        import wandb
        from wandb.sdk import wandb_run
        from wandb.sdk.launch import manage_wandb_config
        from trainlab.utils import library_patches

        STAGING = {LAUNCH_STAGING_MODULE!r}
        with library_patches.applied("wandb_launch_inputs"):
            settings = wandb.Settings(x_disable_stats=True, console="off", silent=True)
            wandb.init(mode="offline", dir={str(tmp_path)!r}, settings=settings).finish()
        print("imported by a patched run start:", STAGING in sys.modules)
        wandb_run.Run._detect_and_apply_job_inputs(object.__new__(wandb_run.Run))
        print("imported by W&B's own:", STAGING in sys.modules)
        manage_wandb_config(include=["lr"])  # no run yet: the input is staged
        staged = sys.modules[STAGING].StagedLaunchInputs()._staged_inputs
        print("staged:", len(staged))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported by a patched run start: False" in result.stdout
    assert "imported by W&B's own: True" in result.stdout
    assert "staged: 1" in result.stdout


def test_wandb_applies_staged_inputs_to_the_run(monkeypatch):
    import importlib

    staging = importlib.import_module(LAUNCH_STAGING_MODULE)
    applied = []
    monkeypatch.setattr(staging.StagedLaunchInputs, "apply", lambda self, run: applied.append(run))
    run = object.__new__(wandb_run.Run)
    for patched in (False, True):  # W&B's own method, then the patched one: the same
        if patched:
            assert library_patches.apply("wandb_launch_inputs") == ["wandb_launch_inputs"]
        wandb_run.Run._detect_and_apply_job_inputs(run)
    assert applied == [run, run]


def test_patched_run_start_skips_launch_while_nothing_can_be_staged(monkeypatch):
    calls = []
    monkeypatch.setattr(wandb_run.Run, "_detect_and_apply_job_inputs", lambda self: calls.append(self))
    monkeypatch.delitem(sys.modules, LAUNCH_STAGING_MODULE, raising=False)
    library_patches.apply("wandb_launch_inputs")
    wandb_run.Run._detect_and_apply_job_inputs(object())
    assert calls == [] and LAUNCH_STAGING_MODULE not in sys.modules


# the fence ----------------------------------------------------------------------------------------


def test_apply_restore_and_applied_put_the_libraries_own_functions_back():
    own = {name: patch.owner_object().__dict__[patch.attribute] for name, patch in PATCHES.items()}
    with library_patches.applied() as installed:
        assert installed == list(PATCHES)
        for name, patch in PATCHES.items():
            now = patch.owner_object().__dict__[patch.attribute]
            assert now is not own[name] and now.__wrapped__ is own[name]
        with library_patches.applied() as again:  # already in place: nothing to install or undo
            assert again == []
        assert library_patches.apply() == []
    for name, patch in PATCHES.items():
        assert patch.owner_object().__dict__[patch.attribute] is own[name]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", []), ("off", []), ("1", list(PATCHES)), ("", list(PATCHES)), (",".join(PATCHES), list(PATCHES))],
)
def test_the_setting_chooses_the_patches(monkeypatch, value, expected):
    monkeypatch.setenv(SETTING, value)
    assert library_patches.apply() == expected


def test_the_setting_names_one_patch(monkeypatch):
    name = next(iter(PATCHES))
    monkeypatch.setenv(SETTING, name)
    assert library_patches.apply() == [name]


def test_an_unknown_patch_name_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv(SETTING, "wandb_launch_input")
    with pytest.raises(ValueError, match="no patch named wandb_launch_input; choose 0, 1 or") as error:
        library_patches.apply()
    assert all(name in str(error.value) for name in PATCHES)


def test_a_library_outside_the_tested_versions_is_left_as_it_ships(monkeypatch, caplog):
    patch = next(iter(PATCHES.values()))
    monkeypatch.setattr(library_patches, "version", lambda distribution: "999.0")
    with caplog.at_level(logging.INFO, logger=library_patches.__name__):
        assert library_patches.apply(patch.name) == []
    assert f"{patch.distribution} 999.0 is outside the versions" in caplog.text
    assert not hasattr(patch.owner_object().__dict__[patch.attribute], "__wrapped__")


def test_a_target_with_other_parameters_is_left_as_it_ships(monkeypatch, caplog):
    patch = next(iter(PATCHES.values()))
    monkeypatch.setattr(patch.owner_object(), patch.attribute, lambda self, extra: None)
    with caplog.at_level(logging.INFO, logger=library_patches.__name__):
        assert library_patches.apply(patch.name) == []
    assert "takes other parameters" in caplog.text


def test_a_missing_target_is_left_alone(monkeypatch, caplog):
    patch = PATCHES["wandb_launch_inputs"]
    monkeypatch.delattr(wandb_run.Run, "_detect_and_apply_job_inputs")
    with caplog.at_level(logging.INFO, logger=library_patches.__name__):
        assert library_patches.apply(patch.name) == []
    assert "has no wandb.sdk.wandb_run.Run._detect_and_apply_job_inputs" in caplog.text


# Hydra: ConfigLoaderImpl.load_sweep_config --------------------------------------------------------


def _multirun(tmp_path, monkeypatch, seeds: str = "1,2,3") -> list[dict]:
    """A real Hydra multirun (basic sweeper and launcher) of a tiny app; the configs its jobs got."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "app.yaml").write_text("seed: 0\nlr: 0.1\n")
    jobs = []

    @hydra.main(config_path=str(tmp_path), config_name="app", version_base="1.3")
    def app(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        jobs.append(
            {"seed": cfg.seed, "num": HydraConfig.get().job.num, "dir": HydraConfig.get().runtime.output_dir}
        )

    arguments = ["-m", f"seed={seeds}", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", ["app", *arguments, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    app()
    return jobs


def _composing_spy(monkeypatch) -> list[tuple]:
    """Hydra's own load_sweep_config, recording (loader, overrides, config) of each composition."""
    own = ConfigLoaderImpl.__dict__["load_sweep_config"]
    calls = []

    def load_sweep_config(self, master_config, sweep_overrides):
        config = own(self, master_config, sweep_overrides)
        calls.append((self, list(sweep_overrides), config))
        return config

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", load_sweep_config)
    return calls


def test_hydras_sweeper_and_launcher_compose_each_job_on_one_loader(tmp_path, monkeypatch):
    """What the patch relies on: Hydra's basic sweeper composes every job of a batch to check it,
    then its launcher asks the same loader again for each job, with the same overrides in the same
    order, and writes the job's number into the config it gets (so it must get its own copy)."""
    calls = _composing_spy(monkeypatch)
    jobs = _multirun(tmp_path, monkeypatch)
    assert len({id(loader) for loader, _, _ in calls}) == 1
    checked, launched = [overrides for _, overrides, _ in calls[:3]], [o for _, o, _ in calls[3:]]
    assert len(calls) == 6 and checked == launched == [["seed=1"], ["seed=2"], ["seed=3"]]
    # the launcher writes each job's number into the config it received; the checked ones keep
    # theirs as composed
    assert [config.hydra.job.num for _, _, config in calls[3:]] == [job["num"] for job in jobs] == [0, 1, 2]
    assert all(OmegaConf.is_missing(config.hydra.job, "num") for _, _, config in calls[:3])


def test_patched_multirun_composes_each_job_once_into_the_same_jobs(tmp_path, monkeypatch):
    calls = _composing_spy(monkeypatch)
    reference = _multirun(tmp_path / "own", monkeypatch)
    calls.clear()
    assert library_patches.apply("hydra_sweep_configs") == ["hydra_sweep_configs"]
    jobs = _multirun(tmp_path / "patched", monkeypatch)
    # the check composed the first job and derived the two others (they differ only in the
    # seed); the launcher received all three
    assert len(calls) == 1
    assert [(j["seed"], j["num"]) for j in jobs] == [(j["seed"], j["num"]) for j in reference]
    assert len({j["dir"] for j in jobs}) == 3
    for job in ("0", "1", "2"):  # what Hydra wrote of each job's config, overrides included
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            own = (tmp_path / "own" / "sweep" / job / ".hydra" / name).read_text()
            patched = (tmp_path / "patched" / "sweep" / job / ".hydra" / name).read_text()
            assert patched == own.replace(str(tmp_path / "own"), str(tmp_path / "patched"))


# the study of scripts/bench/study_overhead.py, with its seed, init and learning rate as the last
# three overrides, as Hydra's sweepers list a job's overrides
_STUDY = ["data=digits", "model=mlp", "model.width=32", "optimizer=sgd", "trainer.max_epochs=5"]


def _job(seed="1", init="kaiming_normal", lr="0.05", *more: str) -> list[str]:
    return [*_STUDY, *more, f"init={init}", f"optimizer.lr={lr}", f"seed={seed}"]


@pytest.fixture(scope="module")
def _trainlab_master():
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from trainlab import CONFIG_DIR

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONFIG_DIR))
    master = loader.load_configuration(
        "train", overrides=[*_STUDY, "seed=1,2", "hydra.job.chdir=false"], run_mode=RunMode.MULTIRUN
    )
    return loader, master


@pytest.fixture
def trainlab_loader(_trainlab_master):
    """Hydra's config loader for trainlab's configs, with nothing kept by the patch yet, and a
    multirun's master config."""
    loader, master = _trainlab_master
    loader.__dict__.pop("_trainlab_composed_configs", None)
    library_patches._composed_jobs.pop(loader, None)
    return loader, master


def _counting_load(compositions: list):
    """The patch's load_sweep_config around Hydra's own, which records what it composes."""
    own = ConfigLoaderImpl.__dict__["load_sweep_config"]

    def compose(self, master_config, sweep_overrides):
        compositions.append(list(sweep_overrides))
        return own(self, master_config, sweep_overrides)

    return library_patches.keeping_composed_sweep_configs(compose)


def _as_composed(config) -> tuple:
    """All of a config as Hydra built it (interpolations unresolved), with its struct flag."""
    return OmegaConf.to_container(config, resolve=False), OmegaConf.is_struct(config)


@pytest.mark.parametrize(
    "job",
    [
        _job(seed="2"),
        _job(seed="3", lr="0.2"),
        _job(seed="null"),
        _job(seed="4", lr="${optimizer.momentum}"),  # an interpolation, kept as such
    ],
    ids=["seed", "seed and lr", "null", "interpolation"],
)
def test_a_job_that_differs_only_in_values_is_derived_as_hydra_composes_it(trainlab_loader, job):
    loader, master = trainlab_loader
    compositions: list = []
    load = _counting_load(compositions)
    load(loader, master, _job())  # the sweeper's check of the first job
    derived = load(loader, master, job)
    assert compositions == [_job()]  # the second job was derived, not composed
    composed = ConfigLoaderImpl.__dict__["load_sweep_config"](loader, master, job)
    assert _as_composed(derived) == _as_composed(composed)
    assert OmegaConf.to_container(derived.hydra.overrides.task) == job
    assert derived.hydra.job.override_dirname == composed.hydra.job.override_dirname


@pytest.mark.parametrize(
    ("first", "job"),
    [
        (_job(), _job(init="xavier_normal")),  # a config group
        (_job("1", "kaiming_normal", "0.05", "+extra=1"), _job("1", "kaiming_normal", "0.05", "+extra=2")),
        (
            _job("1", "kaiming_normal", "0.05", "optimizer={momentum:0.5}"),  # merges into what is there
            _job("1", "kaiming_normal", "0.05", "optimizer={momentum:0.8}"),
        ),
        (  # another override touches the changed key
            _job("1", "kaiming_normal", "0.05", "optimizer={lr:0.1}"),
            _job("1", "kaiming_normal", "0.2", "optimizer={lr:0.1}"),
        ),
        (
            _job("1", "kaiming_normal", "0.05", "hydra.verbose=false"),
            _job("1", "kaiming_normal", "0.05", "hydra.verbose=true"),
        ),
        (_job(), [*_job(), "trainer.max_epochs=2"]),  # other override lines
    ],
    ids=["group", "append", "dict", "touched twice", "hydra", "more lines"],
)
def test_a_job_that_differs_in_more_than_plain_values_is_composed(trainlab_loader, first, job):
    loader, master = trainlab_loader
    compositions: list = []
    load = _counting_load(compositions)
    load(loader, master, first)
    config = load(loader, master, job)
    assert compositions == [first, job]
    composed = ConfigLoaderImpl.__dict__["load_sweep_config"](loader, master, job)
    assert _as_composed(config) == _as_composed(composed)


def test_what_jobs_are_derived_from_stays_in_the_composing_process(trainlab_loader):
    """The joblib and submitit launchers pickle the loader to their workers: the configs waiting
    for the launcher travel with it, the configs kept to derive jobs from do not."""
    loader, master = trainlab_loader
    load = _counting_load([])
    load(loader, master, _job())
    assert len(library_patches._composed_jobs[loader]) == 1
    travelled = pickle.loads(pickle.dumps(loader))
    assert list(travelled.__dict__["_trainlab_composed_configs"]) == [tuple(_job())]
    assert travelled not in library_patches._composed_jobs


def test_a_derived_job_is_its_own_config(trainlab_loader):
    """Derived configs share nothing with the job they came from, nor with each other: what the
    launcher writes into one is in no other."""
    loader, master = trainlab_loader
    load = _counting_load([])
    first = load(loader, master, _job())
    second, third = load(loader, master, _job(seed="2")), load(loader, master, _job(seed="3"))
    second.hydra.job.num, second.model.width = 7, 1
    assert (first.seed, second.seed, third.seed) == (1, 2, 3)
    assert OmegaConf.is_missing(third.hydra.job, "num") and third.model.width == first.model.width == 32


class _Loader:
    """A stand-in for Hydra's config loader: composing counts and builds a small config. Every
    key is a config group's here, so that no job is derived from another."""

    MASTER = OmegaConf.create({"hydra": {"overrides": {"hydra": []}, "job": {"config_name": "app"}}})

    def __init__(self) -> None:
        self.composed = 0
        self.repository = SimpleNamespace(group_exists=lambda key: True)

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed += 1
        return OmegaConf.create({"overrides": list(sweep_overrides), "hydra": {"job": {"num": None}}})


def test_a_kept_config_is_handed_out_once_and_unchanged():
    """A sweeper that does not check (or a repeated trial) asks the launcher's way twice: the
    second request composes anew, unchanged by what the launcher wrote into the first."""
    load = library_patches.keeping_composed_sweep_configs(_Loader.load_sweep_config)
    loader = _Loader()
    load(loader, _Loader.MASTER, ["lr=0.1"])  # the check
    first = load(loader, _Loader.MASTER, ["lr=0.1"])  # the launcher
    first.hydra.job.num = 7
    second = load(loader, _Loader.MASTER, ["lr=0.1"])
    assert loader.composed == 2 and second is not first and second.hydra.job.num is None


def test_at_most_kept_sweep_configs_wait(monkeypatch):
    monkeypatch.setattr(library_patches, "KEPT_SWEEP_CONFIGS", 2)
    load = library_patches.keeping_composed_sweep_configs(_Loader.load_sweep_config)
    loader = _Loader()
    batch = [[f"seed={s}"] for s in range(4)]
    for overrides in [*batch, *batch]:
        load(loader, _Loader.MASTER, overrides)
    assert loader.composed == 4 + 2  # the two beyond the kept ones are composed again


@pytest.mark.slow
def test_each_job_of_a_trainlab_multirun_gets_its_own_config_and_directory(tmp_path):
    result = run_cli(
        "trainlab.train", "-m", "data=digits", "model=mlp", "model.width=16", "logger=csv",
        "trainer.max_steps=2", "test=false", "seed=1,2,3", *QUIET, f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    for num, seed in enumerate((1, 2, 3)):
        job = sweep / str(num)
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        hydra_config = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert config["seed"] == seed and hydra_config["job"]["num"] == num
        assert Path(hydra_config["runtime"]["output_dir"]) == job and (job / "summary.json").is_file()
