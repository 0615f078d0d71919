"""`python -m trainlab.report <multirun dir> [--wandb]`: write the study report of a multirun."""

from __future__ import annotations

import argparse
import logging
import sys

from trainlab.report.study import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainlab.report", description=__doc__)
    parser.add_argument("multirun_dir", help="a multirun directory, e.g. logs/train/multiruns/<timestamp>")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to W&B")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = write_report(args.multirun_dir, log_to_wandb=args.wandb)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in report.files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
