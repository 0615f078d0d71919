"""trainlab's Optuna sweeper: `python -m trainlab.train -m hparams_search=optuna`.

A Hydra sweeper on Optuna's ask-and-tell interface (current Optuna: its samplers, pruners and
optuna-dashboard), replacing the hydra-optuna-sweeper plugin, which pins optuna<3. Each batch
of `n_jobs` trials is asked from the study, launched as ordinary trainlab jobs through the
configured launcher (basic, joblib, submitit), and told back from each job's summary.json:
completed with its `optimized_metric`, pruned, or failed. The study lives in
`hydra.sweeper.storage` (null: `<sweep dir>/optuna.db`), so several launches can share it.

Hydra instantiates sweepers only from the `hydra_plugins` package, hence this module's place;
the search logic is in trainlab.search. Nothing here imports Optuna until a search starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: DictConfig | None,
        heartbeat_interval: int | None = 60,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: choose maximize or minimize.")
        if int(n_trials) < 0 or int(n_jobs) < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials} must be >= 0 and n_jobs={n_jobs} >= 1.")
        if heartbeat_interval is not None and int(heartbeat_interval) < 1:
            raise ValueError(
                f"hydra.sweeper.heartbeat_interval={heartbeat_interval}: seconds, >= 1, or null for none."
            )
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.sampler = _optuna_object(sampler, "hydra.sweeper.sampler")
        self.pruner = _optuna_object(pruner, "hydra.sweeper.pruner")
        self.params = params
        self.heartbeat_interval = int(heartbeat_interval) if heartbeat_interval else None
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from optuna.storages import fail_stale_trials

        from trainlab.search.space import search_space
        from trainlab.search.storage import open_study, rdb_storage, storage_url

        assert self.config is not None and self.launcher is not None
        configured = [f"{key}={value}" for key, value in (self.params or {}).items()]
        distributions, fixed = search_space([*configured, *arguments])
        if not distributions and self.n_trials:
            raise ValueError(
                "hparams_search: nothing to search. Give hydra.sweeper.params or sweep overrides, "
                "e.g. 'optimizer.lr=tag(log, interval(1e-4, 1e-1))'."
            )
        metric = self.config.get("optimized_metric")
        if not metric:
            raise ValueError("hparams_search needs optimized_metric (a key of summary.json's metrics).")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # the sweep's config and arguments, as Hydra's basic sweeper records them: the jobs read
        # the swept keys from it to name their W&B runs (trainlab.tracking.naming.swept_keys)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        url = storage_url(self.storage, sweep_dir)
        storage = rdb_storage(url, self.heartbeat_interval)
        study = open_study(self.study_name, storage, self.sampler, self.pruner, self.direction)
        self._announce(study, url, metric, list(distributions))
        launched: list[int] = []
        while len(launched) < self.n_trials:
            fail_stale_trials(study)  # trials of a launch that died without telling: FAIL
            size = min(self.n_jobs, self.n_trials - len(launched))
            trials = [study.ask(distributions) for _ in range(size)]
            launched += self._run(study, storage, trials, fixed, metric)
        self._write_results(study, url, launched, sweep_dir, metric)

    def _announce(self, study: Any, url: str, metric: str, keys: list[str]) -> None:
        from trainlab.search.storage import shown_url

        log.info(
            f"Optuna study {study.study_name!r} in {shown_url(url)}: {len(study.get_trials(deepcopy=False))} "
            f"trials so far; {self.n_trials} more, {self.n_jobs} at a time; {self.direction} {metric} over "
            f"{', '.join(keys)}. Sampler {type(self.sampler).__name__}, pruner {type(study.pruner).__name__}."
        )
        seed = OmegaConf.select(self.config, "hydra.sweeper.sampler.seed")
        if self.storage and seed is not None and self.n_trials:
            log.warning(
                f"hydra.sweeper.sampler.seed={seed} on a shared storage: launches of this study that run "
                "at the same time with the same seed propose the same first trials; give each its own "
                "seed (or null)."
            )

    def _run(self, study: Any, storage: Any, trials: list, fixed: list[str], metric: str) -> list[int]:
        """Launch one batch of trials as jobs, then tell the study what each job left; returns
        the trials' numbers. A batch stopped on the way (Ctrl-C, SIGTERM, a config that does not
        compose) is told FAIL, so that a shared study keeps no trial RUNNING for it."""
        from optuna.trial import TrialState

        from trainlab.search.space import trial_overrides
        from trainlab.search.storage import heartbeats, job_outcome

        batch = [[*fixed, *trial_overrides(trial.params), f"optuna_trial={trial.number}"] for trial in trials]
        try:
            self.validate_batch_is_legal(batch)  # a bad override fails before any job runs
            with heartbeats(storage, trials):
                returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        except BaseException:
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL)
            raise
        self.job_idx += len(returns)
        for trial, ret in zip(trials, returns, strict=True):
            job_dir = _job_dir(ret)
            state, value, summary = job_outcome(job_dir, metric)
            trial.set_user_attr("job_dir", str(job_dir) if job_dir else None)
            trial.set_user_attr("status", summary.get("status", "missing"))
            if summary.get("error"):
                trial.set_user_attr("error", str(summary["error"])[:500])
            study.tell(trial, value, state=state)
        return [trial.number for trial in trials]

    def _write_results(self, study: Any, url: str, launched: list[int], sweep_dir: Path, metric: str) -> None:
        from trainlab.search.storage import results, shown_url

        record = results(study, url, launched)
        path = sweep_dir / "optimization_results.yaml"  # the folder exists since the sweep began
        OmegaConf.save(OmegaConf.create(record), path)
        if "best_value" in record:
            log.info(
                f"Best of study {study.study_name!r} ({sum(record['trials'].values())} trials): trial "
                f"{record['best_trial']}, {metric} {record['best_value']:.6g}, {record['best_params']}"
            )
        else:
            log.info(f"Study {study.study_name!r} has no completed trial yet: {record['trials']}")
        log.info(f"Search results: {path}; optuna-dashboard {shown_url(url)}")


def _optuna_object(node: Any, key: str) -> Any:
    """A sampler or pruner built from its config, or the object given. The sweeper's config is not
    instantiated recursively (`_recursive_: false` in conf/hydra/sweeper/optuna.yaml): without
    Optuna, Hydra would fail on "Error locating target 'optuna.samplers.TPESampler'", naming
    neither the extra nor how to install it."""
    if not (OmegaConf.is_dict(node) or isinstance(node, dict)) or "_target_" not in node:
        return node
    from hydra.utils import instantiate

    from trainlab.utils.extras import require_extra

    require_extra("optuna", f"hparams_search=optuna ({key}: {node['_target_']})")
    return instantiate(node)


def _job_dir(ret: Any) -> Path | None:
    """The job's output directory, from the Hydra config its JobReturn carries."""
    output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    return Path(output_dir) if output_dir else None
