"""`python -m trainlab.report <multirun dir> [--wandb] [--wandb-workspace] [--job-figures]`: write
the study report of a multirun; --wandb also logs it as a W&B run, --wandb-workspace saves a W&B
view of the study (offline: prints the view it would save), --job-figures draws each job's own
layer-statistics figures (layer_stats_<stat>.png) from its layer_stats.csv."""

from __future__ import annotations

import argparse
import logging
import sys

from trainlab.report.write import write_report, write_workspace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainlab.report", description=__doc__)
    parser.add_argument("multirun_dir", help="a multirun directory, e.g. logs/train/multiruns/<timestamp>")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to W&B")
    parser.add_argument(
        "--wandb-workspace",
        action="store_true",
        help="save a W&B view of the study: runs grouped by the study axes, accuracy, parallel "
        "coordinates, layer statistics (offline: print what it would save)",
    )
    parser.add_argument(
        "--job-figures",
        action="store_true",
        help="also draw each job's layer_stats_<stat>.png from its layer_stats.csv (the jobs of a "
        "multirun leave them out unless callbacks.layer_stats.plots=true)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = write_report(args.multirun_dir, log_to_wandb=args.wandb)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in report.files:
        print(path)
    if args.job_figures:
        from trainlab.report.layer_plots import job_figures

        for path in job_figures(args.multirun_dir):
            print(path)
    if args.wandb_workspace:
        from trainlab.tracking.loggers import wandb_logged_in

        online = wandb_logged_in()
        try:
            print(write_workspace(report, save=online))
        except ImportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not online:
            print(
                "Offline (WANDB_MODE=offline or not logged in): nothing saved; `wandb login` and re-run to save it."
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
