"""Study throughput: an N-seed study as a trainlab multirun against a plain script.

The study is small on purpose, as many real ones are: an MLP (3 x 256, Kaiming-normal, no
normalisation) on scikit-learn's 8x8 digits, SGD with momentum, batch 64, 5 epochs; each seed
trains in about a tenth of a second. Three ways to run it, each a fresh process from the command
to its exit:

- `plain`: scripts/bench/plain_study.py, a PyTorch loop over the seeds in one process;
- `trainlab`: `python -m trainlab.train -m seed=1,...,N <study>` with trainlab's defaults
  (W&B offline + CSV, layer statistics, checkpoints, the test of the best checkpoint, the report);
- `trainlab lean`: the same with `logger=csv callbacks.layer_stats.plots=false`.

For each, the wall time at N = 1 and N = 8 (by default) gives the marginal cost of one more job
(the slope over N) and the fixed cost (the intercept). The runs alternate in ABBA order (plain
first on even repeats, last on odd ones) and each repeat gives the ratio of the trainlab study to
the plain script measured next to it; the table reports medians over the repeats. A separate
measurement gives the seconds from the command to the first training step of a single run
(default study and this study), and `--phases` shows where a job's time goes (job_phases.py).

`--patches` measures instead what each of trainlab's patches of other libraries buys
(trainlab.utils.library_patches): the `trainlab` setting with every patch, without each one in
turn (`TRAINLAB_LIBRARY_PATCHES`), alternating in ABBA order: wall and CPU seconds, and for each
the difference to every patch in the same repeat (median and range over the repeats).

    python scripts/bench/study_overhead.py [--repeats 3] [--seeds 1 8] [--phases] [--out bench_results/study_overhead.json] [overrides]
    python scripts/bench/study_overhead.py --patches [--repeats 4] [--seeds 1 8] [overrides]

Extra overrides apply to both trainlab settings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, print_table, time_command, write_json

from trainlab.utils.library_patches import NAMES as PATCHES
from trainlab.utils.library_patches import SETTING

HERE = Path(__file__).resolve().parent

STUDY = [
    "data=digits", "model=mlp", "model.depth=3", "model.width=256", "optimizer=sgd",
    "optimizer.lr=0.05", "optimizer.momentum=0.9", "data.batch_size=64", "trainer.max_epochs=5",
    "init=kaiming_normal", "norm=none",
]  # fmt: skip
SETTINGS = {"trainlab": [], "trainlab lean": ["logger=csv", "callbacks.layer_stats.plots=false"]}
FIRST_STEP = "+callbacks.first_step._target_=first_step.FirstStepMarker"
# The targets of the study-throughput work (see BENCHMARKS.md)
TARGETS = {"marginal_over_plain_s": 0.7, "first_step_s": 4.0, "study_ratio": 2.5}


def environment(patches: str | None = None) -> dict:
    """The benchmark's environment; `patches`: the value of TRAINLAB_LIBRARY_PATCHES, if given."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    if patches is not None:
        env[SETTING] = patches
    return env


def timed(command: list[str], cwd: Path, marker: str | None = None, patches: str | None = None) -> float:
    return time_command(command, cwd, environment(patches), marker)


def plain_command(seeds: int) -> list[str]:
    return [sys.executable, str(HERE / "plain_study.py"), "--seeds", str(seeds)]


def trainlab_command(seeds: int, setting: list[str], extra: list[str], sweep_dir: Path) -> list[str]:
    seed_list = ",".join(str(s) for s in range(1, seeds + 1))
    return [
        sys.executable, "-m", "trainlab.train", "-m", f"seed={seed_list}", *STUDY, *setting, *extra,
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip


def measure_studies(repeats: int, seed_counts: list[int], extra: list[str], tmp: Path) -> dict:
    """Wall seconds of every (way, N), one list per repeat, in ABBA order."""
    ways = ["plain", *SETTINGS]
    times: dict[str, dict[int, list[float]]] = {w: {n: [] for n in seed_counts} for w in ways}
    for repeat in range(repeats):
        order = ways if repeat % 2 == 0 else ways[::-1]
        for seeds in seed_counts:
            for way in order:
                if way == "plain":
                    command = plain_command(seeds)
                else:
                    sweep = tmp / f"{way.replace(' ', '_')}_{seeds}_{repeat}"
                    command = trainlab_command(seeds, SETTINGS[way], extra, sweep)
                seconds = timed(command, tmp)
                times[way][seeds].append(seconds)
                print(f"repeat {repeat}: {way}, {seeds} seeds: {seconds:.2f} s", flush=True)
    return times


def summarise(times: dict[str, dict[int, list[float]]], seed_counts: list[int]) -> list[dict]:
    low, high = min(seed_counts), max(seed_counts)
    plain = times["plain"]
    plain_slopes = [(b - a) / (high - low) for a, b in zip(plain[low], plain[high], strict=True)]
    rows = []
    for way, by_seeds in times.items():
        slopes = [(b - a) / (high - low) for a, b in zip(by_seeds[low], by_seeds[high], strict=True)]
        fixed = [a - s * low for a, s in zip(by_seeds[low], slopes, strict=True)]
        ratios = [t / p for t, p in zip(by_seeds[high], plain[high], strict=True)]
        over_plain = [s - p for s, p in zip(slopes, plain_slopes, strict=True)]
        rows.append(
            {
                "way": way,
                f"{low} seed(s) s": statistics.median(by_seeds[low]),
                f"{high} seeds s": statistics.median(by_seeds[high]),
                "per extra job s": statistics.median(slopes),
                "over plain's per seed s": None if way == "plain" else statistics.median(over_plain),
                "fixed s": statistics.median(fixed),
                f"{high} seeds / plain": None if way == "plain" else statistics.median(ratios),
                "ratio range": None if way == "plain" else f"{min(ratios):.2f}-{max(ratios):.2f}",
            }
        )
    return rows


def patch_variants() -> dict[str, str]:
    """TRAINLAB_LIBRARY_PATCHES of each variant: every patch, and every patch but one."""
    variants = {"every patch": "1"}
    for name in PATCHES:
        variants[f"without {name}"] = ",".join(p for p in PATCHES if p != name) or "0"
    return variants


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_patches(repeats: int, seed_counts: list[int], extra: list[str], tmp: Path) -> dict:
    """Wall and CPU seconds of the `trainlab` setting under each patch variant, per N, one per
    repeat, in ABBA order. CPU seconds: the command's processes, user and system (what the
    patches save is work in the process; on a shared machine the wall time also holds the waits
    for a core)."""
    variants = patch_variants()
    times = {kind: {v: {n: [] for n in seed_counts} for v in variants} for kind in ("wall", "cpu")}
    for repeat in range(repeats):
        order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        for seeds in seed_counts:
            for variant in order:
                sweep = tmp / f"patches_{repeat}_{seeds}_{variant.replace(' ', '_')}"
                command = trainlab_command(seeds, SETTINGS["trainlab"], extra, sweep)
                cpu_before = cpu_seconds_of_children()
                wall = timed(command, tmp, patches=variants[variant])
                cpu = cpu_seconds_of_children() - cpu_before
                times["wall"][variant][seeds].append(wall)
                times["cpu"][variant][seeds].append(cpu)
                print(f"repeat {repeat}: {variant}, {seeds} seeds: {wall:.2f} s, CPU {cpu:.2f} s", flush=True)
    return times


def summarise_patches(times: dict[str, dict[int, list[float]]], seed_counts: list[int]) -> list[dict]:
    """Per variant: medians, and what leaving the patch out costs against every patch in the
    same repeat (positive: the patch saves that much), per extra job and for a 1-job study."""
    low, high = min(seed_counts), max(seed_counts)

    def slopes(by_seeds):
        return [(b - a) / (high - low) for a, b in zip(by_seeds[low], by_seeds[high], strict=True)]

    def spread(values):
        return f"{statistics.median(values):+.3f} ({min(values):+.3f}..{max(values):+.3f})"

    every = times["every patch"]
    rows = []
    for variant, by_seeds in times.items():
        job_costs = [s - e for s, e in zip(slopes(by_seeds), slopes(every), strict=True)]
        low_costs = [t - e for t, e in zip(by_seeds[low], every[low], strict=True)]
        high_costs = [t - e for t, e in zip(by_seeds[high], every[high], strict=True)]
        rows.append(
            {
                "variant": variant,
                f"{low} seed(s) s": statistics.median(by_seeds[low]),
                f"{high} seeds s": statistics.median(by_seeds[high]),
                "per extra job s": statistics.median(slopes(by_seeds)),
                "lost per job s (range)": None if variant == "every patch" else spread(job_costs),
                f"lost at {low} seed(s) s (range)": None if variant == "every patch" else spread(low_costs),
                f"lost at {high} seeds s (range)": None if variant == "every patch" else spread(high_costs),
            }
        )
    return rows


def measure_first_step(repeats: int, extra: list[str], tmp: Path) -> list[dict]:
    cases = {
        "default study (python -m trainlab.train)": [],
        "this study, seed=1": [*STUDY, "seed=1"],
    }
    # the floor: the interpreter importing Lightning (torch, torch._dynamo, torchmetrics, ...),
    # which any Lightning script pays before its first step
    floor = [timed([sys.executable, "-c", "import lightning.pytorch"], tmp) for _ in range(repeats)]
    rows = [
        {
            "first training step of": "(floor: python -c 'import lightning.pytorch')",
            "median s": statistics.median(floor),
            "min s": min(floor),
            "max s": max(floor),
        }
    ]
    for name, overrides in cases.items():
        command = [
            sys.executable,
            "-m",
            "trainlab.train",
            *overrides,
            *extra,
            f"paths.log_dir={tmp}",
            FIRST_STEP,
        ]
        seconds = [timed(command, tmp, marker="TRAINLAB_FIRST_STEP") for _ in range(repeats)]
        rows.append(
            {
                "first training step of": name,
                "median s": statistics.median(seconds),
                "min s": min(seconds),
                "max s": max(seconds),
            }
        )
    return rows


def measure_phases(seeds: int, extra: list[str], tmp: Path) -> list[dict]:
    seed_list = ",".join(str(s) for s in range(1, seeds + 1))
    command = [
        sys.executable, str(HERE / "job_phases.py"), f"seed={seed_list}", *STUDY, *extra,
        f"hydra.sweep.dir={tmp / 'phases'}",
    ]  # fmt: skip
    output = subprocess.run(command, cwd=tmp, env=environment(), capture_output=True, text=True, check=True)
    line = next(line for line in output.stdout.splitlines() if line.startswith("JOB_PHASES "))
    result = json.loads(line.removeprefix("JOB_PHASES "))
    print(f"\nphases: {result['jobs']} jobs in {result['seconds']:.1f} s (in one process, timers on)")
    return result["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs=2, default=[1, 8], metavar=("LOW", "HIGH"))
    parser.add_argument("--phases", action="store_true", help="also time a job's phases")
    parser.add_argument("--no-studies", action="store_true", help="only the first step (and --phases)")
    parser.add_argument(
        "--patches", action="store_true", help="only what each library patch buys (TRAINLAB_LIBRARY_PATCHES)"
    )
    parser.add_argument("--out", default="bench_results/study_overhead.json")
    args, extra = parser.parse_known_args()
    payload: dict = {"benchmark": "study_overhead", "study": STUDY, "settings": SETTINGS, "extra": extra}
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        if args.patches:
            times = measure_patches(args.repeats, sorted(args.seeds), extra, tmp)
            payload["patch_times"] = times
            for kind in ("wall", "cpu"):
                payload[f"patches_{kind}"] = summarise_patches(times[kind], sorted(args.seeds))
                print_table(
                    f"Library patches, {kind} seconds (median of {args.repeats} ABBA repeats)",
                    payload[f"patches_{kind}"],
                )
            write_json(args.out, payload)
            return
        if not args.no_studies:
            times = measure_studies(args.repeats, sorted(args.seeds), extra, tmp)
            payload["times"] = times
            payload["studies"] = summarise(times, sorted(args.seeds))
            print_table(
                f"A {max(args.seeds)}-seed study (median of {args.repeats} ABBA repeats)", payload["studies"]
            )
        payload["first_step"] = measure_first_step(args.repeats, extra, tmp)
        print_table("Command to first training step", payload["first_step"])
        if args.phases:
            payload["phases"] = measure_phases(max(args.seeds), extra, tmp)
            print_table("Where a job's time goes", payload["phases"])
    payload["targets"] = TARGETS
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
