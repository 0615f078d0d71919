"""The Optuna study of a search: where it is stored, how several launches share it, and what
each finished job tells it.

Several launches (at the same time, on one machine or many) add trials to one study when they
name the same `storage` and `study_name`; a re-launch continues the study. Optuna numbers the
trials in the database, so numbers stay unique across launches.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainlab.run.status import COMPLETED, PRUNED

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# How long a SQLite connection waits for another process's write before it gives up (SQLite's
# own default is 5 s; a launch reporting a trial can hold the lock that long on a busy disk).
SQLITE_BUSY_TIMEOUT_S = 60
# Launches started together race to create the tables and the study; the loser retries.
OPEN_ATTEMPTS = 8
# The driver package SQLAlchemy needs for each database (the URL's scheme before any '+driver').
DRIVERS = {"postgresql": "psycopg2-binary (or psycopg)", "mysql": "PyMySQL (URL mysql+pymysql://...)"}


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """`storage`, or, when it is null, a SQLite file in the sweep directory (the search is never
    only in memory: optuna-dashboard and a re-launch can read it)."""
    if storage:
        return str(storage)
    return f"sqlite:///{(Path(sweep_dir) / 'optuna.db').resolve()}"


def shown_url(url: str) -> str:
    """`url` with its password masked, for logs and files (`postgresql://u:***@host/db`)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: nothing to hide that it could find
        return url


def rdb_storage(url: str, heartbeat_interval: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's database storage for `url`, created (tables included) by whichever launch gets
    there first; for SQLite, its folder is created and writers wait for each other. With
    `heartbeat_interval` (seconds) the running trials of a launch that stopped sending
    heartbeats for two intervals can be failed (`fail_stale_trials`)."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    if heartbeat_interval:
        _expect_heartbeats_outside_optimize()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True  # a server that dropped an idle connection
    try:
        # "table ... already exists", "database is locked", the schema version stamped twice
        return _retried(
            lambda: RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval),
            (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError),
        )
    except ModuleNotFoundError as error:
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        hint = DRIVERS.get(scheme, "the database driver SQLAlchemy names")
        raise ModuleNotFoundError(
            f"hydra.sweeper.storage={shown_url(url)!r} needs {hint}: pip install it ({error})."
        ) from error


def _retried(action: Callable[[], Any], errors: tuple[type[Exception], ...]) -> Any:
    """`action()`, tried again after a random pause of growing length while it raises one of
    `errors` (a race with another launch), OPEN_ATTEMPTS times at most."""
    for attempt in range(OPEN_ATTEMPTS - 1):
        try:
            return action()
        except errors as error:
            log.debug(f"Opening the study storage raced another launch ({error}); trying again.")
            time.sleep(0.2 + random.random() * (attempt + 1))
    return action()


def pruner_or_none(pruner: Any) -> optuna.pruners.BasePruner:
    """`pruner`, or Optuna's NopPruner for null (`hydra.sweeper.pruner=null`: never prune;
    Optuna itself would take None for its MedianPruner)."""
    import optuna

    return optuna.pruners.NopPruner() if pruner is None else pruner


def open_study(
    study_name: str, storage: str | optuna.storages.RDBStorage, sampler: Any, pruner: Any, direction: str
) -> optuna.study.Study:
    """The study `study_name` in `storage` (a URL or an RDBStorage): created, or loaded when it
    exists (a re-launch, or another launch that was first). A study optimised in the other
    direction is an error."""
    import optuna
    import sqlalchemy.exc

    if isinstance(storage, str):
        storage = rdb_storage(storage)
    url = storage.url
    study = _retried(  # a lock held past the busy timeout
        lambda: optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=sampler,
            pruner=pruner_or_none(pruner),
            direction=direction,
            load_if_exists=True,
        ),
        (sqlalchemy.exc.OperationalError,),
    )
    if study.direction.name.lower() != direction.lower():
        raise ValueError(
            f"Study {study_name!r} in {shown_url(url)} maximises or minimises the other way "
            f"({study.direction.name.lower()}); hydra.sweeper.direction={direction}. Use its "
            "direction or another hydra.sweeper.study_name."
        )
    return study


def _expect_heartbeats_outside_optimize() -> None:
    """Optuna warns, at every launch and every trial asked, that heartbeats are experimental and
    meant for `Study.optimize`; the sweeper records them itself (`heartbeats`), on purpose."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings(
        "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
    )
    warnings.filterwarnings("ignore", message=".*heartbeat_interval", category=ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*fail_stale_trials", category=ExperimentalWarning)


@contextmanager
def heartbeats(storage: optuna.storages.RDBStorage, trials: list[optuna.trial.Trial]) -> Iterator[None]:
    """Record a heartbeat for `trials` every heartbeat interval while the block runs (their jobs),
    so that another launch's `optuna.storages.fail_stale_trials` leaves them alone; the trials
    of a launch that was killed stop beating and are failed by the next launch to look."""
    interval = storage.get_heartbeat_interval()
    if not interval or not trials:
        yield
        return
    stop = threading.Event()
    trial_ids = [trial._trial_id for trial in trials]  # Optuna's Trial has no public id

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception:  # a database hiccup: the next beat tries again
                    log.debug(f"Could not record the heartbeat of trial {trial_id}.", exc_info=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def job_outcome(job_dir: Path | None, metric: str) -> tuple[optuna.trial.TrialState, float | None, dict]:
    """(the trial's state, its value, its summary.json) from what a job left in `job_dir`:
    `completed` with a finite `metric` is COMPLETE, `pruned` is PRUNED, anything else FAIL
    (failed, diverged, interrupted, no summary, a metric that is missing or not finite)."""
    from optuna.trial import TrialState

    summary_path = Path(job_dir) / "summary.json" if job_dir is not None else None
    try:
        summary = json.loads(summary_path.read_text()) if summary_path is not None else {}
    except (OSError, ValueError):
        summary = {}
    value = (summary.get("metrics") or {}).get(metric)
    status = summary.get("status")
    if status == PRUNED:
        return TrialState.PRUNED, None, summary
    if status == COMPLETED and isinstance(value, int | float) and math.isfinite(value):
        return TrialState.COMPLETE, float(value), summary
    if status == COMPLETED:
        summary = {**summary, "error": f"{metric} is {value!r} in summary.json's metrics"}
    return TrialState.FAIL, None, summary


def results(study: optuna.study.Study, url: str, launched: list[int]) -> dict[str, Any]:
    """What `optimization_results.yaml` holds: the best trial of the whole study (all launches
    so far), the count of trials per state, and the trials this launch ran."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    record: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": shown_url(url),
        "direction": study.direction.name.lower(),
        "trials": {state: n for state, n in counts.items() if n},
        "this_launch": launched,
    }
    if counts["complete"]:
        best = study.best_trial
        record.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        if best.user_attrs.get("job_dir"):
            record["best_job_dir"] = best.user_attrs["job_dir"]
    return record
