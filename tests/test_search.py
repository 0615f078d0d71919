"""hparams_search=optuna: the search space, a study shared by several launches, pruning, the
dashboard, and the sweeper run end to end (hydra_plugins/trainlab_optuna_sweeper)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from trainlab.callbacks.optuna_pruning import OptunaPruning
from trainlab.report.hydra_callback import MultirunReport
from trainlab.search.space import SearchSpaceError, search_space, trial_overrides
from trainlab.search.storage import job_outcome, open_study, results, shown_url, storage_url

from conftest import QUIET, REPO, read_summary, run_cli

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=32", "logger=csv"]
# a threshold no val/acc reaches: every trial is pruned after its first epoch
PRUNE_EVERY_TRIAL = [
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "~hydra.sweeper.pruner.n_startup_trials",
    "~hydra.sweeper.pruner.n_warmup_steps",
    "+hydra.sweeper.pruner.lower=1.01",
]
optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- the search space ------------------------------------------------------------------------


def test_search_space_reads_hydra_sweep_syntax():
    distributions, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(1e-4, 3e-2))",
            "optimizer.momentum=interval(0.5, 0.99)",
            "model.depth=range(1, 6, 2)",
            "mix.alpha=range(0, 1, 0.25)",
            "norm=choice(batchnorm, none)",
            "model.width=choice(64, 128)",
            "seed=3",
            "model.width=choice(32, 64)",  # given again (the command line after the config): it wins
            "+tags=[a,b]",
        ]
    )
    assert distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 3e-2, log=True),
        "optimizer.momentum": FloatDistribution(0.5, 0.99),
        "model.depth": IntDistribution(1, 5, step=2),  # range's stop is excluded, as in Python
        "mix.alpha": FloatDistribution(0.0, 0.75, step=0.25),
        "norm": CategoricalDistribution(["batchnorm", "none"]),
        "model.width": CategoricalDistribution([32, 64]),
    }
    assert fixed == ["seed=3", "+tags=[a,b]"]
    # a fixed value given after a sweep of the same key takes the key out of the search
    distributions, fixed = search_space(["seed=choice(1, 2)", "seed=7"])
    assert distributions == {} and fixed == ["seed=7"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=interval(0.1, 0.1)", "needs start < end"),
        ("optimizer.lr=tag(log, interval(0, 1))", "start > 0 on a log scale"),
        ("model.depth=range(5, 1)", "holds no value"),
        ("optimizer.lr=glob(*)", "not a sweep Optuna can search"),
    ],
)
def test_search_space_refuses_what_optuna_cannot_search(override, message):
    with pytest.raises(SearchSpaceError, match=message) as error:
        search_space([override])
    assert override.split("=")[0] in str(error.value)  # names the key


def test_trial_parameters_reach_the_job_unchanged():
    params = {
        "optimizer.lr": 0.0012142404210404064,
        "name": "a b's",
        "flag": True,
        "k": 3,
        "x": None,
        "n": "none",
    }
    parsed = OverridesParser.create().parse_overrides(trial_overrides(params))
    assert {o.get_key_element(): o.value() for o in parsed} == params


# --- the study ---------------------------------------------------------------------------------


def test_a_database_password_is_masked_where_the_search_prints_or_writes_its_storage(tmp_path):
    assert shown_url("postgresql://search:secret@db:5432/optuna") == "postgresql://search:***@db:5432/optuna"
    assert shown_url("mysql+pymysql://u:pw@db/optuna") == "mysql+pymysql://u:***@db/optuna"
    assert shown_url(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"


def test_a_search_without_storage_keeps_its_study_in_the_sweep_directory(tmp_path):
    assert storage_url(None, tmp_path / "sweep") == f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert storage_url("postgresql://u:p@db:5432/s", tmp_path) == "postgresql://u:p@db:5432/s"


def _job(tmp_path: Path, status: str, metrics: dict) -> Path:
    job = tmp_path / status
    job.mkdir()
    (job / "summary.json").write_text(json.dumps({"status": status, "metrics": metrics}))
    return job


@pytest.mark.parametrize(
    ("status", "metrics", "state", "value"),
    [
        ("completed", {"val/acc": 0.9}, TrialState.COMPLETE, 0.9),
        ("pruned", {"val/acc": 0.3}, TrialState.PRUNED, None),
        ("diverged", {"val/acc": 0.1}, TrialState.FAIL, None),
        ("failed", {}, TrialState.FAIL, None),
        ("completed", {"val/acc": float("nan")}, TrialState.FAIL, None),
        ("completed", {"test/acc": 0.9}, TrialState.FAIL, None),  # the optimised metric is missing
    ],
)
def test_what_a_job_left_tells_its_trial(tmp_path, status, metrics, state, value):
    assert job_outcome(_job(tmp_path, status, metrics), "val/acc")[:2] == (state, value)


def test_a_job_that_left_no_summary_is_a_failed_trial(tmp_path):
    assert job_outcome(tmp_path / "never-written", "val/acc")[0] == TrialState.FAIL
    assert job_outcome(None, "val/acc")[0] == TrialState.FAIL


SHARE_ONE_STUDY = textwrap.dedent(
    """
    import sys, optuna
    from trainlab.search.storage import open_study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, seed, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    while not __import__("os").path.exists(go):  # both start at the same moment
        pass
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)
    study = open_study("shared", url, sampler, None, "maximize")
    for _ in range(6):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(-1, 1)})
        study.tell(trial, -trial.params["x"] ** 2)
    """
)


def test_processes_started_together_add_their_trials_to_one_sqlite_study(tmp_path):
    """Two processes create the same new study in one SQLite file at the same moment (the race
    that crashed optuna 2 with `table studies already exists`) and add 6 trials each."""
    url = f"sqlite:///{tmp_path / 'db' / 'search.db'}"  # the folder does not exist yet
    go = tmp_path / "go"
    script = tmp_path / "share.py"
    script.write_text(SHARE_ONE_STUDY)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(seed), str(go)], stderr=subprocess.PIPE, text=True
        )
        for seed in (1, 2)
    ]
    go.touch()
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()[-2000:]
    trials = optuna.load_study(study_name="shared", storage=url).trials
    assert sorted(t.number for t in trials) == list(range(12))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_a_study_reopened_in_the_other_direction_is_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    open_study("s", url, None, None, "maximize")
    with pytest.raises(ValueError, match="hydra.sweeper.direction=minimize"):
        open_study("s", url, None, None, "minimize")


def test_results_give_the_best_trial_of_the_whole_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    study = open_study("s", url, None, None, "maximize")
    for value in (0.5, 0.9, 0.7):
        trial = study.ask({"x": FloatDistribution(0, 1)})
        trial.set_user_attr("job_dir", f"/jobs/{trial.number}")
        study.tell(trial, value)
    pruned = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(pruned, state=TrialState.PRUNED)
    record = results(open_study("s", url, None, None, "maximize"), url, launched=[3])
    assert record["best_value"] == 0.9 and record["best_trial"] == 1 and record["best_job_dir"] == "/jobs/1"
    assert record["trials"] == {"complete": 3, "pruned": 1} and record["this_launch"] == [3]


# --- pruning inside a job -----------------------------------------------------------------------


def _trainer(epoch: int, acc: float) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        current_epoch=epoch,
        callback_metrics={"val/acc": torch.tensor(acc)},
        is_global_zero=True,
        world_size=1,
        should_stop=False,
    )


def test_pruning_reports_each_epoch_to_the_trial_and_stops_the_fit_when_pruned(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    pruner = optuna.pruners.ThresholdPruner(lower=0.5)
    study = open_study("s", url, None, pruner, "maximize")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    pruning = OptunaPruning(trial=trial.number, monitor="val/acc", study_name="s", storage=url, pruner=pruner)
    trainer = _trainer(0, 0.7)
    pruning.setup(trainer, None, "fit")
    pruning.on_validation_end(trainer, None)
    assert not trainer.should_stop and pruning.summary_items(trainer) == {}
    trainer = _trainer(1, 0.3)  # below the threshold: pruned
    pruning.on_validation_end(trainer, None)
    assert trainer.should_stop
    items = pruning.summary_items(trainer)
    assert items["status"] == "pruned" and items["pruned_at_epoch"] == 1
    assert "ThresholdPruner after epoch 1: val/acc 0.3" in items["error"]
    stored = optuna.load_study(study_name="s", storage=url).trials[0]
    assert stored.intermediate_values == pytest.approx({0: 0.7, 1: 0.3})


def test_pruning_does_nothing_outside_a_search():
    pruning = OptunaPruning(trial=None, monitor="val/acc", study_name="s", storage="sqlite:///nowhere/x.db")
    trainer = _trainer(0, 0.0)
    pruning.setup(trainer, None, "fit")  # would fail to open the storage if it tried
    pruning.on_validation_end(trainer, None)
    assert not trainer.should_stop and pruning.summary_items(trainer) == {}


def test_pruned_trials_are_listed_apart_and_are_not_failures(tmp_path):
    for num, (status, acc) in enumerate([("completed", 0.9), ("pruned", None), ("failed", None)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        summary = {
            "status": status,
            "overrides": [f"optimizer.lr={0.1 * (num + 1)}", f"optuna_trial={num}"],
            "metrics": {"val/acc": acc} if acc else {},
            "error": {"pruned": "pruned by MedianPruner after epoch 1: val/acc 0.2", "failed": "boom"}.get(
                status
            ),
        }
        (job / "summary.json").write_text(json.dumps(summary))
    not_completed = MultirunReport().finish(tmp_path)
    assert not_completed == [str(tmp_path / "2")]  # the failed job only: pruning is an outcome
    report = (tmp_path / "report.md").read_text()
    assert "axes: optimizer.lr\n" in report  # a trial's number names a job; it is not a study axis
    assert "## Trials pruned by the search (1)" in report
    assert "**pruned** — pruned by MedianPruner after epoch 1" in report
    assert "## Jobs that did not complete (1)" in report


def test_optuna_dashboard_reads_the_search_storage(tmp_path):
    from optuna_dashboard import wsgi

    url = f"sqlite:///{tmp_path / 'search.db'}"
    study = open_study("lr-search", url, None, None, "maximize")
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 0.5)
    responses = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/studies",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }
    body = b"".join(wsgi(url)(environ, lambda status, headers, *_: responses.append(status)))
    assert responses == ["200 OK"]
    (summary,) = json.loads(body)["study_summaries"]
    assert summary["study_name"] == "lr-search"


# --- the sweeper ---------------------------------------------------------------------------------


class FakeLauncher:
    """Runs no training: each job writes the summary.json a run would, val/acc = 1 - (lr - 0.01)^2
    (best at lr=0.01), or `pruned` when lr > 0.5."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir, self.batches = sweep_dir, []
        self.while_running = None  # called while the batch's jobs "run"

    def launch(self, batch, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus
        from omegaconf import OmegaConf

        self.batches.append([list(job) for job in batch])
        if self.while_running is not None:
            self.while_running()
        returns = []
        for num, overrides in enumerate(batch, start=initial_job_idx):
            job = self.sweep_dir / str(num)
            job.mkdir(parents=True)
            lr = float(next(o for o in overrides if o.startswith("optimizer.lr=")).split("=")[1])
            status = "pruned" if lr > 0.5 else "completed"
            summary = {
                "status": status,
                "overrides": list(overrides),
                "metrics": {"val/acc": 1 - (lr - 0.01) ** 2},
            }
            (job / "summary.json").write_text(json.dumps(summary))
            hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job)}}})
            returns.append(
                JobReturn(overrides=list(overrides), hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED)
            )
        return returns


def _sweeper(tmp_path: Path, **settings):
    from omegaconf import OmegaConf

    from hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper import OptunaSweeper

    arguments = dict(
        study_name="s", storage=None, direction="maximize", n_trials=5, n_jobs=2,
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=None, params=None,
    )  # fmt: skip
    sweeper = OptunaSweeper(**{**arguments, **settings})
    sweeper.config = OmegaConf.create(
        {"optimized_metric": "val/acc", "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}, "sweeper": {}}}
    )
    sweeper.launcher = FakeLauncher(tmp_path / "sweep")
    sweeper.validate_batch_is_legal = lambda batch: None  # no Hydra config to compose here
    return sweeper


def test_the_sweeper_asks_in_batches_launches_and_tells_what_each_job_left(tmp_path):
    sweeper = _sweeper(tmp_path)
    sweeper.sweep(["optimizer.lr=choice(0.001, 0.01, 0.9)", "seed=3"])
    assert [len(batch) for batch in sweeper.launcher.batches] == [2, 2, 1]  # n_trials=5, n_jobs=2
    jobs = [job for batch in sweeper.launcher.batches for job in batch]
    assert all(job[0] == "seed=3" and job[-1] == f"optuna_trial={n}" for n, job in enumerate(jobs))
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    for trial in study.trials:
        lr = trial.params["optimizer.lr"]
        assert trial.state == (TrialState.PRUNED if lr > 0.5 else TrialState.COMPLETE)
        assert trial.user_attrs["job_dir"] == str(tmp_path / "sweep" / str(trial.number))
    record = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert record["this_launch"] == [0, 1, 2, 3, 4] and sum(record["trials"].values()) == 5
    assert record["best_params"] == {"optimizer.lr": 0.01} and record["best_value"] == 1.0
    assert (
        tmp_path / "sweep" / "multirun.yaml"
    ).is_file()  # the sweep's record, as Hydra's own sweeper keeps it


def test_trials_of_a_launch_that_died_are_failed_and_running_ones_are_kept_alive(tmp_path):
    """Heartbeats: a launch killed mid-trial leaves its trial RUNNING; the next launch to ask for
    trials fails it once its heartbeat is two intervals old. The trials a live launch is running
    keep beating, so another launch's check leaves them alone."""
    from optuna.storages import fail_stale_trials

    from trainlab.search.storage import rdb_storage

    url = f"sqlite:///{tmp_path / 'search.db'}"
    storage = rdb_storage(url, heartbeat_interval=1)
    orphan = open_study("s", storage, None, None, "maximize").ask(
        {"optimizer.lr": CategoricalDistribution([0.01])}
    )
    storage.record_heartbeat(orphan._trial_id)  # its launch beat once, then died
    sweeper = _sweeper(tmp_path, storage=url, heartbeat_interval=1, n_trials=1, n_jobs=1)
    other_launch = open_study("s", rdb_storage(url, heartbeat_interval=1), None, None, "maximize")

    def another_launch_checks_after_two_intervals():
        time.sleep(3.2)  # SQLite's clock has whole seconds: the orphan's beat is now >= 3 s old
        fail_stale_trials(other_launch)
        running = other_launch.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        assert [t.number for t in running] == [1]  # this launch's trial beats on
        with sqlite3.connect(tmp_path / "search.db") as db:  # (a trial that never beat is never failed)
            assert len(db.execute("SELECT * FROM trial_heartbeats").fetchall()) == 2

    sweeper.launcher.while_running = another_launch_checks_after_two_intervals
    sweeper.sweep(["optimizer.lr=choice(0.01)"])
    states = [t.state for t in optuna.load_study(study_name="s", storage=url).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_sweep_with_nothing_to_search_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to search"):
        _sweeper(tmp_path).sweep(["seed=3"])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"direction": "max"}, "choose maximize or minimize"),
        ({"n_jobs": 0}, "n_jobs=0"),
        ({"heartbeat_interval": 0}, "heartbeat_interval=0: seconds, >= 1, or null"),
    ],
)
def test_bad_sweeper_settings_are_named(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        _sweeper(tmp_path, **setting)


# --- the sweeper, end to end ---------------------------------------------------------------------


def _launch(tmp_path: Path, sweep: str, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "trainlab.train", "hparams_search=optuna", *TINY, *QUIET,
        "trainer.max_epochs=2", f"paths.log_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / sweep}", *overrides,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_searches_launched_together_share_one_study_and_a_relaunch_continues_it(tmp_path):
    shared = [f"hydra.sweeper.storage=sqlite:///{tmp_path / 'search.db'}", "hydra.sweeper.study_name=lr"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    launches = {
        name: subprocess.Popen(
            _launch(
                tmp_path, name, *shared, "hydra.sweeper.n_trials=2", f"hydra.sweeper.sampler.seed={seed}"
            ),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, seed in (("a", 1), ("b", 2))
    }
    for launch in launches.values():
        output = launch.communicate(timeout=600)[0]
        assert launch.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{tmp_path / 'search.db'}")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    records = {
        name: yaml.safe_load((tmp_path / name / "optimization_results.yaml").read_text()) for name in "ab"
    }
    assert sorted(records["a"]["this_launch"] + records["b"]["this_launch"]) == [0, 1, 2, 3]
    values = {t.number: t.value for t in study.trials}
    for name, record in records.items():  # each launch's jobs ran its own trials, with their values
        for number in record["this_launch"]:
            trial = study.trials[number]
            job = Path(trial.user_attrs["job_dir"])
            assert (
                job.parent == tmp_path / name and f"optuna_trial={number}" in read_summary(job)["overrides"]
            )
            assert read_summary(job)["metrics"]["val/acc"] == pytest.approx(values[number])
            # the job found the storage in Hydra's sweeper config: the URL is not in its own config
            assert "search.db" not in (job / ".hydra" / "config.yaml").read_text()
        # the best of the study as it stood when this launch ended (the other may still have run)
        assert record["best_value"] == pytest.approx(values[record["best_trial"]])
        assert record["best_value"] >= max(values[n] for n in record["this_launch"]) - 1e-12
        if record["trials"] == {"complete": 4}:  # the launch that ended last saw every trial finished
            assert record["best_value"] == pytest.approx(study.best_value)
    # a re-launch with n_trials=0 reads the study and reports its best: 4 trials, no new job
    result = run_cli(
        "trainlab.train", *_launch(tmp_path, "c", *shared, "hydra.sweeper.n_trials=0")[3:], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    final = yaml.safe_load((tmp_path / "c" / "optimization_results.yaml").read_text())
    assert final["trials"] == {"complete": 4} and final["this_launch"] == []
    assert (
        final["best_value"] == pytest.approx(study.best_value) and final["best_params"] == study.best_params
    )
    assert "Best of study 'lr' (4 trials)" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_trial_the_pruner_stops_is_recorded_as_pruned(tmp_path):
    """A threshold no trial reaches: every trial is pruned after its first epoch; the jobs end
    `pruned` (not failed), without a test, and the multirun exits 0."""
    result = run_cli(
        "trainlab.train", *_launch(tmp_path, "s", "hydra.sweeper.n_trials=2", "trainer.max_epochs=3", *PRUNE_EVERY_TRIAL)[3:],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        summary = read_summary(tmp_path / "s" / job)
        assert summary["status"] == "pruned" and summary["pruned_at_epoch"] == 0 and summary["epochs"] == 1
        assert "test/acc" not in summary["metrics"] and "ThresholdPruner after epoch 0" in summary["error"]
    study = optuna.load_study(study_name="trainlab", storage=f"sqlite:///{tmp_path / 's' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)
    assert "## Trials pruned by the search (2)" in (tmp_path / "s" / "report.md").read_text()
    assert yaml.safe_load((tmp_path / "s" / "optimization_results.yaml").read_text())["trials"] == {
        "pruned": 2
    }


@pytest.mark.slow
def test_a_ddp_trial_is_pruned_in_every_process_and_its_worker_adds_no_trial(tmp_path):
    """Trials on 2 CPU processes: process 0 reports and decides, both stop at the same epoch; the
    worker runs its job (not a sweep of its own, which would ask the study for trials)."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=3"]
    result = run_cli(
        "trainlab.train",
        *_launch(tmp_path, "s", "hydra.sweeper.n_trials=2", *ddp, *PRUNE_EVERY_TRIAL)[3:],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="trainlab", storage=f"sqlite:///{tmp_path / 's' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    for job in ("0", "1"):
        summary = read_summary(tmp_path / "s" / job)
        # 1293 examples over 2 processes of batch 64: 11 steps each; both stopped after epoch 0
        assert summary["status"] == "pruned" and summary["global_step"] == 11
    assert not (tmp_path / "train").exists()  # no second sweep directory from a worker


def test_the_sweeper_is_found_by_hydra():
    """Hydra instantiates sweepers only from the hydra_plugins package: the install must put
    trainlab's there (setup.py lists it)."""
    from hydra.core.plugins import Plugins

    assert "hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper.OptunaSweeper" in (
        Plugins.instance().class_name_to_class
    )
    assert (REPO / "src" / "hydra_plugins" / "trainlab_optuna_sweeper" / "optuna_sweeper.py").is_file()


def test_a_trial_is_tagged_with_its_study_for_wandb(make_cfg):
    """Each launch of a shared search is a W&B group of its own; the tag gathers the study."""
    from trainlab import builders

    cfg = make_cfg("hparams_search=optuna", "optuna_trial=3", "hydra.sweeper.study_name=lr")
    assert "optuna:lr" in builders.study_tags(cfg)
    assert not any(tag.startswith("optuna:") for tag in builders.study_tags(make_cfg("seed=1", run="plain")))
