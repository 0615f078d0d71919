"""Every GPU check of the open issues as one prepared command for a lent GPU machine.

A lent GPU machine comes with a few minutes of device time in all, starts included. This runs
the checks that still need one, most important first, each in its own process with a time
limit, each step's output to `<out>/<name>.log` (and its JSON next to it), and starts a step only
while the budget left holds the step's estimate; the last table says what ran, what failed, what
was left out, and the `--only` line that runs the rest:

    bash ../shared/device/prepare.sh                   # once, here: .device/ with the missing packages
    # then on the device machine (carry: [".device"]), from the project's root:
    source .device/env.sh && python3 scripts/bench/device_checks.py --out-dir "$OUT" --budget-s 480
    python scripts/bench/device_checks.py --dry-run     # the plan, with the estimates
    python scripts/bench/device_checks.py --cpu-smoke   # the same steps at tiny settings on the CPU

`--cpu-smoke` runs each step's command with CPU settings (tests/test_benchmarks.py runs it), so
that the commands are known to work before they get device time; its figures say nothing.
The estimates are guesses for an H100 or H200 with 16 cores, to be replaced by measured times.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO, print_table, write_json

PYTHON = sys.executable
BENCH = "scripts/bench"
SYNTHETIC_224 = "data=synthetic data.source.image_size=224 data.source.num_images=10240 data.batch_size=256 data.drop_last=true"
TINY_SYNTHETIC = "data=synthetic data.source.image_size=32 data.source.num_images=256 data.batch_size=8"
GPU_PY_ON_CPU = "--accelerator cpu --sizes 32 --batch-size 8 --steps 3 --repeats 1 --workers 0 --batches 20"
STUDY = "-m trainlab.train -m data=digits model=mlp hydra/launcher=vectorised logger=csv paths.log_dir={runs}"
STUDY_ON_CPU = (
    f"{STUDY} seed=1,2 trainer.accelerator=cpu trainer.max_epochs=1 callbacks.layer_stats.plots=false"
)


@dataclass(frozen=True)
class Step:
    """One check: `gpu`, its arguments to Python on the device; `cpu`, the same at tiny CPU
    settings. `{out}` stands for the step's JSON path, `{runs}` for a scratch folder of runs."""

    name: str
    measures: str
    gpu: str
    cpu: str
    estimate_s: int  # on the device, machine warm; a step starts only if the budget left holds it
    timeout_s: int


# most important first: what a short loan of a device must not miss
STEPS = (
    Step(
        "host_sync",
        "issue 27: no host synchronisation between logging steps, under set_sync_debug_mode('error')",
        "-m pytest -q -p no:cacheprovider tests/test_host_sync.py -k gpu",
        "-m pytest -q -p no:cacheprovider tests/test_host_sync.py --collect-only",
        estimate_s=60,
        timeout_s=240,
    ),
    Step(
        "vectorised_64",
        "issue 28: 64 members of the digits MLP against 64 sequential loops (target: 15x)",
        f"{BENCH}/vectorised.py --members 64 --device cuda --optimizer adam --repeats 3 --out {{out}}",
        f"{BENCH}/vectorised.py --members 2 --device cpu --optimizer adam --epochs 1 --out {{out}}",
        estimate_s=90,
        timeout_s=300,
    ),
    Step(
        "gpu_32_eager",
        "issue 27: trainlab against the plain loop at 32 px, eager, 3 ABBA pairs (target: 0.95)",
        f"{BENCH}/gpu.py --sizes 32 --workers 16 --repeats 3 --batches 40 --steps 100 --no-probes --out {{out}}",
        f"{BENCH}/gpu.py {GPU_PY_ON_CPU} --no-probes --out {{out}}",
        estimate_s=150,
        timeout_s=360,
    ),
    Step(
        "vectorised_study",
        "issue 28: a 3-seed vectorised study on the GPU, fp32 (every member a normal run)",
        f"{STUDY} seed=1,2,3 trainer.accelerator=gpu",
        STUDY_ON_CPU,
        estimate_s=45,
        timeout_s=240,
    ),
    Step(
        "vectorised_study_bf16_bn",
        "issue 28: the same study in bf16-mixed with BatchNorm",
        f"{STUDY} seed=1,2,3 trainer.accelerator=gpu trainer.precision=bf16-mixed norm=batchnorm",
        f"{STUDY_ON_CPU} norm=batchnorm",
        estimate_s=45,
        timeout_s=240,
    ),
    Step(
        "gpu_224",
        "issue 27: trainlab at 224 px against the GPU-resident limit, 16 workers (target: 0.85); the loader",
        f"{BENCH}/gpu.py --sizes 224 --workers 16 --repeats 1 --batches 40 --steps 60 --loader-epochs 3 --out {{out}}",
        f"{BENCH}/gpu.py {GPU_PY_ON_CPU} --out {{out}}",
        estimate_s=150,
        timeout_s=420,
    ),
    Step(
        "loader_224",
        "issue 27: what holds the 224 px loader: 8 and 16 pinned workers, each batch's cost to the training process",
        f"{BENCH}/dataloader.py --no-model --main-side --device cuda --workers 8 16 --augment none basic "
        f"--epochs 3 --out {{out}} {SYNTHETIC_224} data.pin_memory=true",
        f"{BENCH}/dataloader.py --no-model --main-side --device cpu --workers 1 --augment none --epochs 1 "
        f"--out {{out}} {TINY_SYNTHETIC}",
        estimate_s=90,
        timeout_s=300,
    ),
    Step(
        "gpu_32_compile",
        "issue 27: eager and compile_mode=reduce-overhead at 32 px, same sitting (compiled not slower)",
        f"{BENCH}/gpu.py --sizes 32 --workers 16 --repeats 2 --batches 40 --steps 100 --no-probes --compile "
        f"--compile-mode reduce-overhead --out {{out}}",
        f"{BENCH}/gpu.py {GPU_PY_ON_CPU} --no-probes --out {{out}}",
        estimate_s=300,
        timeout_s=540,
    ),
)


def command(step: Step, cpu: bool, out_dir: Path, runs: Path) -> list[str]:
    """The step's command line: its words, then the paths put in (a path may hold spaces)."""
    fields = {"out": str(out_dir / f"{step.name}.json"), "runs": str(runs / step.name)}
    return [PYTHON, *(word.format(**fields) for word in (step.cpu if cpu else step.gpu).split())]


def run_step(step: Step, argv: list[str], log: Path, timeout_s: float) -> dict:
    """Run one step with its output in `log`; its outcome (never raises for the step's failure)."""
    start = time.perf_counter()
    with log.open("w") as output:
        try:
            rc = subprocess.run(
                argv, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, timeout=timeout_s
            ).returncode
            outcome = "passed" if rc == 0 else f"failed (rc {rc})"
        except subprocess.TimeoutExpired:
            outcome = f"timed out after {timeout_s:.0f} s"
    return {"step": step.name, "outcome": outcome, "wall s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out-dir", default="bench_results/device_checks", help="logs and JSON ($OUT on the device)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=480, help="start no step that would not end by then"
    )
    parser.add_argument(
        "--only", nargs="+", choices=[s.name for s in STEPS], help="these steps, in this order"
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="each step at tiny settings on the CPU")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    args = parser.parse_args()
    steps = [next(s for s in STEPS if s.name == name) for name in args.only] if args.only else list(STEPS)
    out_dir = Path(args.out_dir)
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    if not args.dry_run:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not args.cpu_smoke and not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here: run it on the GPU machine, or use --cpu-smoke / --dry-run.")
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as runs:
        for step in steps:
            argv = command(step, args.cpu_smoke, out_dir, Path(runs))
            left = args.budget_s - (time.perf_counter() - start)
            if args.dry_run:
                print(f"# {step.name} (~{step.estimate_s} s): {step.measures}\n{' '.join(argv)}")
                continue
            if left < step.estimate_s:
                rows.append({"step": step.name, "outcome": f"left out: {left:.0f} s of the budget left"})
                continue
            print(f"== {step.name}: {step.measures}", flush=True)
            row = run_step(step, argv, out_dir / f"{step.name}.log", min(step.timeout_s, max(left, 30)))
            rows.append(row)
            print(f"   {row['outcome']} in {row['wall s']} s; its output ends:", flush=True)
            print(
                "".join((out_dir / f"{step.name}.log").read_text().splitlines(keepends=True)[-15:]),
                flush=True,
            )
    if args.dry_run:
        return
    print_table(
        "Device checks" + (" (CPU smoke: the commands work; no figures)" if args.cpu_smoke else ""), rows
    )
    rest = [row["step"] for row in rows if not row["outcome"].startswith("passed")]
    if rest:
        print(f'\nthe rest: python3 {BENCH}/device_checks.py --out-dir "$OUT" --only {" ".join(rest)}')
    write_json(out_dir / "device_checks.json", {"cpu_smoke": args.cpu_smoke, "steps": rows})


if __name__ == "__main__":
    main()
