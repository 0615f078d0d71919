"""GPU throughput: a timm resnet18 at 32x32 and 224x224 with bf16 mixed precision and
channels-last (and optionally torch.compile), trainlab.train against a plain PyTorch loop with the
same settings. Needs a CUDA device; elsewhere it says so and writes a 'skipped' result.
The synthetic set holds 100 batches (3.9 GB of uint8 images at 224x224 and batch 256), so that
an epoch is ~90 training steps: trainlab's epoch ends (checkpoints) weigh as in a real study,
not once every few steps.

`--accelerator cpu` runs the very same code on the CPU, at whatever small settings are given: a
check that the benchmark works before it gets GPU time (its figures say nothing about GPUs).

    python scripts/bench/gpu.py [--steps 200] [--compile [--compile-mode reduce-overhead]] [--batch-size 256] [--workers 8]
    python scripts/bench/gpu.py --accelerator cpu --sizes 32 --batch-size 8 --steps 3 --repeats 1 --workers 0
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import print_table, write_json
from overhead import abba_pairs, summarise


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also measure compile=true")
    parser.add_argument(
        "--compile-mode", default="default", help="torch.compile mode under --compile, e.g. reduce-overhead"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--accelerator", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--out", default="bench_results/gpu.json")
    args = parser.parse_args()
    on_gpu = args.accelerator == "gpu"
    if on_gpu and not torch.cuda.is_available():
        print("skipped: no CUDA device here. Run this benchmark on a machine with a GPU.")
        write_json(args.out, {"benchmark": "gpu", "skipped": "no CUDA device"})
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for compiled in [False, True] if args.compile else [False]:
                overrides = [
                    "data=synthetic", f"data.source.image_size={size}", f"data.source.num_images={args.batch_size * 100}",
                    f"data.batch_size={args.batch_size}", f"data.num_workers={args.workers}", f"data.pin_memory={str(on_gpu).lower()}",
                    "model=timm", "model.name=resnet18", f"trainer.accelerator={args.accelerator}", "trainer.precision=bf16-mixed",
                    "channels_last=true", f"compile={str(compiled).lower()}", f"compile_mode={args.compile_mode}", "logger=csv",
                ]  # fmt: skip
                plain, template = [], []
                for _, _, runs in abba_pairs(
                    overrides, args.steps, Path(tmp) / f"{size}-{compiled}", args.repeats
                ):
                    plain.append(summarise(runs["plain"])[0] * args.batch_size)
                    template.append(summarise(runs["trainlab"])[0] * args.batch_size)
                rows.append({
                    "size": size, "compile": compiled, "plain img/s": statistics.median(plain),
                    "trainlab img/s": statistics.median(template),
                    "ratio": statistics.median(t / p for t, p in zip(template, plain, strict=True)),
                })  # fmt: skip
    device = torch.cuda.get_device_name(0) if on_gpu else "CPU: a check of the script, not a GPU figure"
    print_table(f"GPU benchmark ({device}): timm resnet18, bf16-mixed, channels-last", rows)
    write_json(args.out, {"benchmark": "gpu", "accelerator": args.accelerator, "rows": rows})


if __name__ == "__main__":
    main()
