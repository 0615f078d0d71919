"""A report as a W&B run of its own (`job_type=report`): its tables, its figures and a few numbers."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# Where a report goes when no job says (e.g. every job ran with logger=csv): the config's default.
DEFAULT_PROJECT = "trainlab"


def wandb_destination(jobs: Iterable[Path]) -> dict[str, str | None]:
    """The W&B `project` and `entity` the jobs logged to (`logger.wandb.*` in each job's
    .hydra/config.yaml), so that a study's report lands next to its runs. Jobs that disagree:
    the most common, with a warning; none with a W&B logger: project `trainlab`."""
    found = []
    for job in jobs:
        path = Path(job) / ".hydra" / "config.yaml"
        if not path.is_file():
            continue
        wandb_cfg = OmegaConf.select(OmegaConf.load(path), "logger.wandb", default=None)
        if wandb_cfg is None:
            continue
        try:
            found.append((wandb_cfg.get("project"), wandb_cfg.get("entity")))
        except Exception:  # an interpolation only Hydra's run could resolve: not this job's answer
            continue
    counts = Counter(place for place in found if place[0])
    if not counts:
        return {"project": DEFAULT_PROJECT, "entity": None}
    (project, entity), _ = counts.most_common(1)[0]
    if len(counts) > 1:
        log.warning(
            f"The jobs logged to several W&B projects ({sorted(counts)}); the report goes to {project}."
        )
    return {"project": project, "entity": entity}


def log_report_run(
    tables: dict[str, pd.DataFrame],
    images: dict[str, Path],
    summary: dict[str, float] | None = None,
    **init_kwargs: Any,
) -> str:
    """Log `tables` (W&B Tables) and `images` (PNG files) under their keys, and `summary` as the
    run's summary, in one W&B run; returns the run's directory. `init_kwargs` go to `wandb.init`
    (project, entity, group, name, dir, config, mode); without `mode` the run is online when the
    user is logged in to W&B and offline otherwise."""
    import wandb

    from trainlab.tracking.loggers import wandb_logged_in
    from trainlab.utils import library_patches

    init_kwargs.setdefault("mode", "online" if wandb_logged_in() else "offline")
    with library_patches.applied("wandb_launch_inputs"):
        run = wandb.init(job_type="report", reinit="finish_previous", **init_kwargs)
    try:
        logged = {key: wandb.Table(dataframe=table) for key, table in tables.items()}
        logged.update({key: wandb.Image(str(path)) for key, path in images.items()})
        run.log(logged)
        run.summary.update(summary or {})
        return run.dir
    finally:
        run.finish()
