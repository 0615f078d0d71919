"""Start-up time: seconds from the command to the first training step, and for --help / --cfg job.

python scripts/bench/startup.py [--repeats 3] [--out bench_results/startup.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, print_table, time_command, write_json

HERE = Path(__file__).resolve().parent


def time_trainlab(args: list[str], marker: str | None, cwd: Path) -> float:
    """Seconds until `python -m trainlab.train <args>` prints `marker` (then it is stopped), or
    until it exits."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return time_command([sys.executable, "-m", "trainlab.train", *args], cwd, env, marker)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench_results/startup.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "--help": (["--help"], None),
            "--cfg job": (["--cfg", "job"], None),
            "first step (default study, W&B offline)": (
                [f"paths.log_dir={tmp}", "+callbacks.first_step._target_=first_step.FirstStepMarker"],
                "TRAINLAB_FIRST_STEP",
            ),
            "first step (logger=csv)": (
                [
                    f"paths.log_dir={tmp}",
                    "logger=csv",
                    "+callbacks.first_step._target_=first_step.FirstStepMarker",
                ],
                "TRAINLAB_FIRST_STEP",
            ),
        }
        rows = []
        for name, (command, marker) in cases.items():
            times = [time_trainlab(command, marker, REPO) for _ in range(args.repeats)]
            rows.append(
                {
                    "command": name,
                    "median s": statistics.median(times),
                    "min s": min(times),
                    "max s": max(times),
                }
            )
    print_table("Start-up (python -m trainlab.train ...)", rows)
    write_json(args.out, {"benchmark": "startup", "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
