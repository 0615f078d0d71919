"""A study's wall time: a 12-job grid on the embedded data with the basic launcher (jobs one
after another) and with the joblib launcher (2 parallel jobs, 1 thread each) on this machine,
each job in a process of its own (the default) and in the workers themselves (isolate_jobs=false).

    python scripts/bench/study.py [--out bench_results/study.json] [overrides]

Extra overrides apply to every job, e.g. callbacks.layer_stats.plots=false.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import REPO, print_table, write_json

# 12 jobs: 3 inits x 2 norms x 2 seeds, a small MLP on the 8x8 digits, 3 epochs each.
GRID = [
    "init=default,kaiming_normal,xavier_uniform", "norm=none,batchnorm", "seed=1,2",
    "data=digits", "model=mlp", "model.width=64", "trainer.max_epochs=3", "logger=csv",
    "callbacks.rich_progress_bar=null",
]  # fmt: skip
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
LAUNCHERS = {
    "basic": [],
    "joblib (2 jobs)": JOBLIB,
    "joblib (2 jobs), isolate_jobs=false": [*JOBLIB, "hydra.launcher.isolate_jobs=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench_results/study.json")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job")
    args = parser.parse_args()
    grid = [*GRID, *args.overrides]
    rows = []
    for name, launcher in LAUNCHERS.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "trainlab.train", "-m", *launcher, *grid, f"paths.log_dir={tmp}"],
                cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True, text=True,
            )  # fmt: skip
            elapsed = time.perf_counter() - start
            if result.returncode:
                raise RuntimeError(f"{name}: exit {result.returncode}\n{result.stderr[-2000:]}")
            rows.append({"launcher": name, "jobs": 12, "wall s": elapsed, "s per job": elapsed / 12})
    for row in rows[1:]:
        row["speed-up"] = rows[0]["wall s"] / row["wall s"]
    print_table(f"A 12-job study on the embedded digits, extra overrides {args.overrides or 'none'}", rows)
    write_json(args.out, {"benchmark": "study", "grid": grid, "rows": rows})


if __name__ == "__main__":
    main()
