"""A vectorised study against today's multirun and against one job (issue 28's CPU targets).

The study of scripts/bench/study_overhead.py (an MLP of 3 x 256 on scikit-learn's 8x8 digits, SGD
with momentum, batch 64, 5 epochs, trainlab's defaults: W&B offline + CSV, layer statistics,
checkpoints, the test of the best checkpoint, the report), each a fresh process from the command
to its exit, in ABBA order over the repeats:

- `one job`: `python -m trainlab.train <study> seed=1`;
- `multirun`: `python -m trainlab.train -m <study> seed=1,...,N` (Hydra's basic launcher);
- `vectorised`: the same with `hydra/launcher=vectorised`: the N jobs train as one network.

Also the group's fit alone (its log line `Vectorised group: fit of N members in X s`). The
training loop against N plain PyTorch loops is scripts/bench/vectorised.py.

    python scripts/bench/vectorised_study.py [--seeds 8] [--repeats 3] [overrides]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, print_table, write_json
from study_overhead import STUDY

GROUP_FIT = re.compile(r"Vectorised group: fit of (\d+) members in ([0-9.]+) s")


def run(arguments: list[str], workdir: Path) -> tuple[float, str]:
    """Wall seconds of `python -m trainlab.train <arguments>` and its output."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "trainlab.train", *arguments, f"paths.log_dir={workdir}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return elapsed, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench_results/vectorised_study.json")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args()
    study = [*STUDY, *args.overrides]
    seeds = "seed=" + ",".join(str(s) for s in range(1, args.seeds + 1))
    settings = {
        "one job": [*study, "seed=1"],
        "multirun": ["-m", *study, seeds],
        "vectorised": ["-m", *study, seeds, "hydra/launcher=vectorised"],
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    fits: dict[str, list[float]] = {"vectorised": []}
    for repeat in range(args.repeats):
        order = list(settings) if repeat % 2 == 0 else list(reversed(settings))
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                elapsed, output = run(settings[name], Path(tmp))
            times[name].append(elapsed)
            if name == "vectorised" and (match := GROUP_FIT.search(output)):
                fits[name].append(float(match.group(2)))
            print(f"repeat {repeat}: {name} {elapsed:.2f} s", flush=True)
    one = statistics.median(times["one job"])
    rows = [
        {
            "setting": name,
            "jobs": 1 if name == "one job" else args.seeds,
            "wall s (median)": round(statistics.median(values), 2),
            "range": f"{min(values):.2f}-{max(values):.2f}",
            "x one job": round(statistics.median(values) / one, 2),
            "fit s (median)": round(statistics.median(fits[name]), 2) if fits.get(name) else "",
        }
        for name, values in times.items()
    ]
    print_table(f"{args.seeds}-seed study (medians of {args.repeats})", rows)
    write_json(
        args.out, {"seeds": args.seeds, "repeats": args.repeats, "rows": rows, "times": times, "fits": fits}
    )


if __name__ == "__main__":
    main()
