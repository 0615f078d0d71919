"""`hydra/launcher=vectorised`: the jobs of a multirun that differ only in the seed, the init
scheme, the learning rate, the weight decay or the label smoothing train as one vectorised model
in this process, each still a job of its own (trainlab.vectorised); every other job runs as
Hydra's basic launcher runs it, one after another, with a line saying why it was not grouped."""

# No `from __future__ import annotations`: Hydra executes this module before it is in sys.modules,
# where dataclasses look string annotations up.

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class VectorisedLauncher(BasicLauncher):
    """Hydra's basic launcher, with the jobs of `trainlab.train` grouped and each group trained as
    one (`max_members`: the largest group, a larger one is split; `min_members`: the smallest, a
    smaller one runs job by job; `exact`: each member's own bits or batched kernels, null: exact
    on the CPU, fast on a GPU)."""

    def __init__(self, max_members: int = 64, min_members: int = 2, exact: bool | None = None) -> None:
        super().__init__()
        self.max_members, self.min_members = int(max_members), int(min_members)
        if self.min_members < 1:
            raise ValueError(
                f"hydra.launcher.min_members={min_members} must be >= 1 (1: a group of one job)."
            )
        if exact not in (None, True, False):
            raise ValueError(
                f"hydra.launcher.exact={exact!r}: choose null (exact on the CPU, fast on a GPU), "
                "true (each member's own bits) or false (batched kernels, ~1e-7 apart)."
            )
        self.exact = exact

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from trainlab.vectorised.grouping import plan_groups

        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        plan = plan_groups(configs, self.max_members) if _is_trainlab_train(self.task_function) else []
        log.info(f"Launching {len(configs)} jobs: {_describe(plan, self.min_members)}")
        returns: list[JobReturn] = [None] * len(configs)  # type: ignore[list-item]
        for group in plan or [_Single(i) for i in range(len(configs))]:
            if not group.reason and len(group.jobs) >= self.min_members:
                for index, ret in zip(
                    group.jobs, self._launch_group([configs[i] for i in group.jobs]), strict=True
                ):
                    returns[index] = ret
                continue
            if group.reason:
                log.info(f"Job #{group.jobs[0]} runs on its own: {group.reason}.")
            for index in group.jobs:  # too small a group: its jobs one by one
                returns[index] = self._run(configs[index], self.task_function)
        return returns

    def _launch_group(self, configs: list[DictConfig]) -> list[JobReturn]:
        from trainlab.stack import import_training_stack

        # as a job imports it, spared from the garbage collector (why: trainlab.stack)
        import_training_stack(configs[0], "trainlab.vectorised.group")
        from trainlab.vectorised.group import GroupTraining

        group = GroupTraining(self.exact)
        returns = [self._run(config, group.join) for config in configs]  # each member's job set-up
        _log_to_every_member(configs)  # the group's lines in each member's log file
        # Hydra's config of a job of this multirun while the group trains: what a job asks of it
        # (in a multirun? a failed job is recorded and the sweep goes on) reads as in a job
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(configs[0])
        try:
            records = group.train()
        finally:
            HydraConfig.instance().cfg = previous
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for ret, record, config in zip(returns, records, configs, strict=True):
            if record is not None and ret.status.name == "COMPLETED":
                ret.return_value = _optimized_value(config, record)
        return returns

    def _run(self, config: DictConfig, task_function: TaskFunction) -> JobReturn:
        log.info(f"\t#{config.hydra.job.num} : {' '.join(filter_overrides(config.hydra.overrides.task))}")
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret


@dataclass(frozen=True)
class _Single:
    """A job of another entry point than trainlab.train: run as the basic launcher runs it."""

    index: int
    reason: str = ""

    @property
    def jobs(self):
        return (self.index,)


def _log_to_every_member(configs: list[DictConfig]) -> None:
    """Log as a job logs (`hydra.job_logging`), into every member's log file at once."""
    first = configs[0]
    configure_log(first.hydra.job_logging, first.hydra.verbose)
    root = logging.getLogger()
    files = [handler for handler in root.handlers if isinstance(handler, logging.FileHandler)]
    for config in configs[1:]:
        log_file = OmegaConf.select(config, "hydra.job_logging.handlers.file.filename")
        for handler in files if log_file else ():
            member_handler = logging.FileHandler(str(log_file), mode="a")
            member_handler.setFormatter(handler.formatter)
            member_handler.setLevel(handler.level)
            root.addHandler(member_handler)


def _is_trainlab_train(task_function: TaskFunction) -> bool:
    """Only `python -m trainlab.train` jobs are grouped; any other entry point runs job by job."""
    code = getattr(task_function, "__code__", None)
    return code is not None and Path(code.co_filename).as_posix().endswith("trainlab/train.py")


def _optimized_value(config: DictConfig, record: dict):
    """What `trainlab.train` returns to a sweeper: the run's `optimized_metric` (NaN if missing)."""
    metric = config.get("optimized_metric")
    if not metric:
        return None
    value = record.get("metrics", {}).get(metric)
    return float("nan") if value is None else value


def _describe(plan, min_members: int) -> str:
    grouped = [g for g in plan if not g.reason and len(g.jobs) >= min_members]
    alone = sum(len(g.jobs) for g in plan) - sum(len(g.jobs) for g in grouped)
    sizes = ", ".join(str(len(g.jobs)) for g in grouped)
    return f"{len(grouped)} vectorised group(s) ({sizes or 'none'} members), {alone} job(s) on their own"


@dataclass
class VectorisedLauncherConf:
    _target_: str = f"{__name__}.VectorisedLauncher"
    # the largest group trained as one; a larger one is split into groups of this size
    max_members: int = 64
    # the smallest group trained as one: a smaller group's jobs run one by one, as ordinary jobs
    min_members: int = 2
    # each member's own bits (true), one batched kernel per layer and update (false, ~1e-7 apart),
    # or null: exact on the CPU, fast on a GPU (docs/vectorised.md)
    exact: bool | None = None


CONFIG = ("vectorised", VectorisedLauncherConf)  # hydra/launcher/vectorised (search_path.py)
