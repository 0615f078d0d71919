"""Data pipeline: images/s through the training DataLoader (0, 1, 2 workers) against the model's
consumption rate (training steps on batches already in memory), for the default study.

    python scripts/bench/dataloader.py [--augment none basic] [--epochs 2] [--workers 0 1 2]
        [--repeats 1] [--no-model] [--out bench_results/dataloader.json] [overrides]

The loader at 224 px (synthetic images, 2 workers), medians of 5 runs, without the model:

    python scripts/bench/dataloader.py --no-model --workers 2 --repeats 5 --augment none basic \
        data=synthetic data.source.image_size=224

`--main-side`: what each batch costs the training process itself once a worker has made it
(each batch is taken after the workers had half a second to make it): taking it from the loader,
reading it all (a copy into one reused buffer, as the pin-memory thread's copy into pinned memory
reads it), and letting it go (unmapping the worker's shared memory, and freeing it if the worker
no longer holds it). One thread of the training process does these for every batch, whatever the
number of workers (the pin-memory thread on a GPU; the loader is unpinned here, so that they
fall in the thread that times them): 1000 / their sum is the batches per second no number of
workers can pass.

    python scripts/bench/dataloader.py --no-model --main-side --workers 2 --augment none \
        data=synthetic data.source.image_size=224 data.source.num_images=10240 data.batch_size=256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import compose, print_table, write_json


def loader_rate(cfg, workers: int, epochs: int, device=None) -> float:
    """Images/s of the training loader, iterated `epochs` times after its workers started. With
    a `device`, each batch is also copied there (non_blocking) and its images normalised there,
    as a run's batches are (the DataModule's on_after_batch_transfer)."""
    import torch

    import trainlab.builders as builders

    cfg.data.num_workers = workers
    datamodule = builders.build_datamodule(cfg)
    loader = datamodule.train_dataloader()
    next(iter(loader))  # start the workers before timing
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _labels in loader:
            if device is not None:
                images = datamodule.network_input(images.to(device, non_blocking=True))
                _labels.to(device, non_blocking=True)
            count += len(images)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    rate = count / (time.perf_counter() - start)
    del loader  # its persistent workers end here, not in the next measurement
    return rate


def main_side_costs(cfg, workers: int, batches: int = 8, settle_s: float = 0.5) -> dict[str, float]:
    """Milliseconds per batch, in the training process, of taking a ready batch from the loader,
    reading it all, and letting it go (module docstring): medians over `batches` batches, each
    taken after `settle_s` seconds in which the workers make it."""
    import torch

    import trainlab.builders as builders

    cfg.data.num_workers = workers
    cfg.data.pin_memory = False  # else the pin-memory thread pays these costs, out of sight
    loader = builders.build_datamodule(cfg).train_dataloader()
    made = iter(loader)
    buffer = torch.zeros_like(next(made)[0])  # its pages already touched, as a pinned buffer's are
    costs: dict[str, list[float]] = {"take": [], "read": [], "let go": []}
    for _ in range(batches):
        time.sleep(settle_s)
        start = time.perf_counter()
        images, labels = next(made)
        taken = time.perf_counter()
        buffer.copy_(images)
        read = time.perf_counter()
        del images, labels
        released = time.perf_counter()
        costs["take"].append(taken - start)
        costs["read"].append(read - taken)
        costs["let go"].append(released - read)
    del made, loader  # its persistent workers end here
    row = {f"{name} ms": 1000 * statistics.median(values) for name, values in costs.items()}
    row["batches/s at most"] = 1000 / sum(row.values())
    return row


def model_rate(cfg, steps: int = 60) -> float:
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders

    datamodule = builders.build_datamodule(cfg)
    network = builders.build_model(cfg, datamodule)[0].net.train()
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    images, labels = next(iter(datamodule.network_batches()))
    for step in range(steps + 5):
        if step == 5:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(network(images), labels).backward()
        optimizer.step()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--augment", nargs="+", default=["none", "basic"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure; the table gives medians")
    parser.add_argument("--no-model", action="store_true", help="measure the loader only")
    parser.add_argument(
        "--main-side", action="store_true", help="a batch's cost to the training process (docstring)"
    )
    parser.add_argument(
        "--device",
        help="also copy each batch to this device (cpu, cuda) and make it the network's input there "
        "(float32, normalised), as a run does; without it: the batches as the loader gives them",
    )
    parser.add_argument("--out", default="bench_results/dataloader.json")
    parser.add_argument("overrides", nargs="*", help="extra trainlab overrides, e.g. model=mlp")
    args = parser.parse_args()
    if args.main_side and not any(workers > 0 for workers in args.workers):
        parser.error("--main-side measures batches made by worker processes: give --workers 1 or more.")
    device = None
    if args.device:
        import torch

        device = torch.device(args.device)
    rows, main_side = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for augment in args.augment:
            cfg = compose(
                [f"augment={augment}", "trainer.accelerator=cpu", *args.overrides], Path(tmp) / augment
            )
            row: dict = {"augment": augment}
            if not args.no_model:
                row["model img/s"] = model_rate(cfg)
            runs: dict[int, list[float]] = {w: [] for w in args.workers}
            for _ in range(args.repeats):  # the worker counts alternate: drift favours none
                for workers in args.workers:
                    runs[workers].append(loader_rate(cfg, workers, args.epochs, device))
            for workers, rates in runs.items():
                row[f"loader img/s, {workers} workers"] = statistics.median(rates)
                if args.repeats > 1:
                    row[f"{workers} workers, runs"] = " ".join(f"{r:.0f}" for r in rates)
            if not args.no_model and 0 in runs:
                row["loader/model (0 workers)"] = row["loader img/s, 0 workers"] / row["model img/s"]
            rows.append(row)
            for workers in args.workers if args.main_side else ():
                if workers > 0:
                    side = {"augment": augment, "workers": workers, **main_side_costs(cfg, workers)}
                    main_side.append(side)
    print_table("DataLoader vs model consumption", rows)
    if main_side:
        print_table("A ready batch's cost to the training process (medians, ms)", main_side)
    write_json(
        args.out,
        {
            "benchmark": "dataloader",
            "overrides": args.overrides,
            "device": args.device,
            "rows": rows,
            "main_side": main_side,
        },
    )


if __name__ == "__main__":
    main()
