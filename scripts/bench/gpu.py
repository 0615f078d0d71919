"""GPU throughput: a timm resnet18 at 32x32 and 224x224 with bf16 mixed precision and
channels-last (and optionally torch.compile), trainlab.train against a plain PyTorch loop with the
same settings, and two probes of the same pieces:

- GPU-resident limit: the same network and optimizer (same precision, layout, compile) on one
  batch already on the GPU: what the GPU can do when nothing feeds it, the ceiling of both loops;
- loader alone: the DataModule's training loader with no model, its uint8 batches copied to the
  GPU (pinned, non_blocking) and normalised there, as a run gets them (once per size: compiling
  changes nothing there).

Needs a CUDA device; elsewhere it says so and writes a 'skipped' result. The synthetic set holds
`--batches` batches (100: 3.9 GB of uint8 images at 224x224 and batch 256), so that an epoch is
~70 training steps: trainlab's epoch ends (checkpoints) weigh as in a real study, not once every
few steps.

`--accelerator cpu` runs the very same code on the CPU, at whatever small settings are given: a
check that the benchmark works before it gets GPU time (its figures say nothing about GPUs).

    python scripts/bench/gpu.py [--steps 200] [--compile [--compile-mode reduce-overhead]] [--batch-size 256] [--workers 8]
    python scripts/bench/gpu.py --quick --compile --workers 16   # every configuration, sized for ~5 min on an H200
    python scripts/bench/gpu.py --accelerator cpu --sizes 32 --batch-size 8 --steps 3 --repeats 1 --workers 0
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import compose, print_table, write_json
from dataloader import loader_rate
from overhead import WARMUP, abba_pairs, summarise

# --quick: one ABBA pair of short runs on a smaller set, for all four configurations in one go
QUICK = {"steps": 60, "repeats": 1, "batches": 40}


def resident_limit(overrides: list[str], steps: int, workdir: Path) -> float:
    """Images/s of training steps on one batch already on the device (normalised there, in the
    configured memory layout): the network, optimizer, precision and compile of the run."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders

    cfg = compose(overrides, workdir / "resident")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    gpu = cfg.trainer.accelerator in ("gpu", "cuda")
    device = torch.device("cuda" if gpu else "cpu")
    autocast_dtype = torch.bfloat16 if "bf16" in str(cfg.trainer.precision) else None
    layout = torch.channels_last if cfg.get("channels_last") else torch.contiguous_format
    datamodule = builders.build_datamodule(cfg)
    network = builders.build_model(cfg, datamodule)[0].net.to(device).train()
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    dataset = datamodule.dataset("train")
    items = [dataset[i] for i in range(cfg.data.batch_size)]
    images = torch.stack([image for image, _ in items]).to(device, memory_format=layout)
    images = datamodule.network_input(images)
    labels = torch.tensor([label for _, label in items], device=device)
    for step in range(WARMUP + steps):
        if step == WARMUP:
            torch.cuda.synchronize() if gpu else None
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(network(images), labels)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize() if gpu else None
    return steps * len(images) / (time.perf_counter() - start)


def loader_alone(overrides: list[str], workers: int, epochs: int, workdir: Path) -> float:
    """Images/s of the DataModule's training loader alone, delivered to the device as a run
    gets them (pinned, non_blocking, normalised there)."""
    import torch

    cfg = compose(overrides, workdir / "loader")
    gpu = cfg.trainer.accelerator in ("gpu", "cuda")
    cfg.data.pin_memory = gpu
    return loader_rate(cfg, workers, epochs, device=torch.device("cuda" if gpu else "cpu"))


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="ABBA pairs of plain and trainlab runs")
    parser.add_argument("--compile", action="store_true", help="also measure compile=true")
    parser.add_argument(
        "--compile-mode", default="default", help="torch.compile mode under --compile, e.g. reduce-overhead"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=100, help="the synthetic set's size, in batches")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--loader-epochs", type=int, default=1, help="epochs the loader probe times")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--no-probes", action="store_true", help="only trainlab against the plain loop")
    parser.add_argument(
        "--quick", action="store_true", help=f"short runs, for every configuration in minutes: {QUICK}"
    )
    parser.add_argument("--accelerator", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--out", default="bench_results/gpu.json")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
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
                    "data=synthetic", f"data.source.image_size={size}", f"data.source.num_images={args.batch_size * args.batches}",
                    f"data.batch_size={args.batch_size}", f"data.num_workers={args.workers}", f"data.pin_memory={str(on_gpu).lower()}",
                    # every training batch the same shape: under compile a last, smaller batch would
                    # compile another graph inside the timed steps (once a run, not a steady cost)
                    "data.drop_last=true",
                    "model=timm", "model.name=resnet18", f"trainer.accelerator={args.accelerator}", "trainer.precision=bf16-mixed",
                    "channels_last=true", f"compile={str(compiled).lower()}", f"compile_mode={args.compile_mode}", "logger=csv",
                ]  # fmt: skip
                workdir = Path(tmp) / f"{size}-{compiled}"
                plain, template = [], []
                for _, _, runs in abba_pairs(overrides, args.steps, workdir, args.repeats):
                    plain.append(summarise(runs["plain"])[0] * args.batch_size)
                    template.append(summarise(runs["trainlab"])[0] * args.batch_size)
                row = {
                    "size": size, "compile": compiled, "plain img/s": statistics.median(plain),
                    "trainlab img/s": statistics.median(template),
                    "ratio": statistics.median(t / p for t, p in zip(template, plain, strict=True)),
                }  # fmt: skip
                if not args.no_probes:
                    limit = resident_limit(overrides, args.steps, workdir)
                    row["GPU-resident limit img/s"] = limit
                    row["trainlab / limit"] = row["trainlab img/s"] / limit
                    row[f"loader alone img/s ({args.workers} workers)"] = (
                        None
                        if compiled
                        else loader_alone(overrides, args.workers, args.loader_epochs, workdir)
                    )
                rows.append(row)
    device = torch.cuda.get_device_name(0) if on_gpu else "CPU: a check of the script, not a GPU figure"
    print_table(f"GPU benchmark ({device}): timm resnet18, bf16-mixed, channels-last", rows)
    settings = {k: getattr(args, k) for k in ("steps", "repeats", "batch_size", "batches", "workers")}
    write_json(
        args.out, {"benchmark": "gpu", "accelerator": args.accelerator, "settings": settings, "rows": rows}
    )


if __name__ == "__main__":
    main()
