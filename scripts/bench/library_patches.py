"""What each of trainlab's patches of other libraries buys (trainlab.utils.library_patches),
timed where it acts, each in a fresh process with the patch and without it, alternating in ABBA
order:

- `hydra_sweep_configs`: Hydra's work for one job of a multirun of
  scripts/bench/study_overhead.py's study, as its basic sweeper and launcher ask for it (the
  sweeper's check composes the job's config, the launcher asks for it again; with the patch a
  later job, which differs from the first only in its seed, is derived from the first's config);
  the median over the jobs after the first;
- `wandb_launch_inputs`: a process's first `wandb.init` (offline) and `finish`.

Wall seconds, and the process's CPU seconds (what the patches save is work in the process; on a
shared machine the wall time also holds the waits for a core). Each variant leaves out one patch
(TRAINLAB_LIBRARY_PATCHES); "lost" is its time minus every patch's in the same repeat.

    python scripts/bench/library_patches.py [--repeats 6] [--jobs 8] [--measure hydra wandb] [--out bench_results/library_patches.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, print_table, write_json

HERE = Path(__file__).resolve().parent


def child_hydra(jobs: int) -> dict:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from study_overhead import STUDY

    from trainlab import CONFIG_DIR
    from trainlab.utils import library_patches

    library_patches.apply()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONFIG_DIR))
    seeds = ",".join(str(seed) for seed in range(1, jobs + 1))
    master = loader.load_configuration(
        "train", overrides=[*STUDY, f"seed={seeds}"], run_mode=RunMode.MULTIRUN
    )
    batch = [[*STUDY, f"seed={seed}"] for seed in range(1, jobs + 1)]
    wall, cpu = [], []
    for overrides in batch:  # Sweeper.validate_batch_is_legal
        start, start_cpu = time.perf_counter(), time.process_time()
        loader.load_sweep_config(master, list(overrides))
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    for num, overrides in enumerate(batch):  # BasicLauncher.launch
        start, start_cpu = time.perf_counter(), time.process_time()
        config = loader.load_sweep_config(master, list(overrides))
        wall[num] += time.perf_counter() - start
        cpu[num] += time.process_time() - start_cpu
        assert config.seed == num + 1
    return {"wall": statistics.median(wall[1:]), "cpu": statistics.median(cpu[1:])}


def child_wandb(directory: str) -> dict:
    import wandb

    from trainlab.utils import library_patches

    library_patches.apply()
    settings = wandb.Settings(x_disable_stats=True, console="off", silent=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    wandb.init(mode="offline", dir=directory, settings=settings).finish()
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - start_cpu}


def run_child(what: str, patches: str, jobs: int, directory: Path) -> dict:
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "TRAINLAB_LIBRARY_PATCHES": patches,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, __file__, "--child", what, "--jobs", str(jobs), "--dir", str(directory)]
    output = subprocess.run(command, env=env, cwd=directory, capture_output=True, text=True, check=True)
    line = next(line for line in output.stdout.splitlines() if line.startswith("CHILD "))
    return json.loads(line.removeprefix("CHILD "))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--out", default="bench_results/library_patches.json")
    parser.add_argument("--measure", nargs="+", choices=("hydra", "wandb"), default=["hydra", "wandb"])
    parser.add_argument("--child", choices=("hydra", "wandb"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_hydra(args.jobs) if args.child == "hydra" else child_wandb(args.dir)
        print("CHILD " + json.dumps(result), flush=True)
        return

    from trainlab.utils.library_patches import NAMES

    measured = {"hydra": [n for n in NAMES if n.startswith("hydra_")], "wandb": ["wandb_launch_inputs"]}
    measured = {what: names for what, names in measured.items() if what in args.measure}
    rows = []
    payload: dict = {"benchmark": "library_patches", "jobs": args.jobs, "times": {}}
    with tempfile.TemporaryDirectory() as directory:
        for what, names in measured.items():
            variants = {"every patch": "1"} | {
                f"without {name}": ",".join(n for n in NAMES if n != name) or "0" for name in names
            }
            times = {v: {"wall": [], "cpu": []} for v in variants}
            for repeat in range(args.repeats):
                order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
                for variant in order:
                    result = run_child(what, variants[variant], args.jobs, Path(directory))
                    for kind in ("wall", "cpu"):
                        times[variant][kind].append(result[kind])
                    print(f"{what}, repeat {repeat}: {variant}: {result}", flush=True)
            payload["times"][what] = times
            every = times["every patch"]
            for variant, by_kind in times.items():
                row = {
                    "timed": "a later job's compositions" if what == "hydra" else "first wandb.init + finish"
                }
                row["variant"] = variant
                for kind in ("wall", "cpu"):
                    row[f"{kind} s"] = statistics.median(by_kind[kind])
                    lost = [a - b for a, b in zip(by_kind[kind], every[kind], strict=True)]
                    row[f"{kind} lost s (range)"] = (
                        None
                        if variant == "every patch"
                        else f"{statistics.median(lost):+.3f} ({min(lost):+.3f}..{max(lost):+.3f})"
                    )
                rows.append(row)
    payload["rows"] = rows
    print_table(f"Library patches (median of {args.repeats} ABBA repeats)", rows)
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
