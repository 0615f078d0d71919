"""A report as a W&B run of its own (`job_type=report`): its tables, its figures and a few numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


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

    from trainlab.run.loggers import wandb_logged_in

    init_kwargs.setdefault("mode", "online" if wandb_logged_in() else "offline")
    run = wandb.init(job_type="report", reinit="finish_previous", **init_kwargs)
    try:
        logged = {key: wandb.Table(dataframe=table) for key, table in tables.items()}
        logged.update({key: wandb.Image(str(path)) for key, path in images.items()})
        run.log(logged)
        run.summary.update(summary or {})
        return run.dir
    finally:
        run.finish()
