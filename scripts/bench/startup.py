"""Start-up time: seconds from the command to the first training step, and for --help / --cfg job.

python scripts/bench/startup.py [--repeats 3] [--out bench_results/startup.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, print_table, write_json

HERE = Path(__file__).resolve().parent


def time_command(args: list[str], marker: str | None, cwd: Path) -> float:
    """Seconds until the process prints `marker` (then it is stopped), or until it exits."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "trainlab.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if marker and marker in line:
            elapsed = time.perf_counter() - start
            process.kill()
            process.wait()
            return elapsed
    process.wait()
    if marker:
        raise RuntimeError(f"{args}: the run ended without printing {marker}")
    return time.perf_counter() - start


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
            times = [time_command(command, marker, REPO) for _ in range(args.repeats)]
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
