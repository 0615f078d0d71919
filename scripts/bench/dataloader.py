"""Data pipeline: images/s through the DataLoader (0, 1, 2 workers) against the model's
consumption rate (training steps on batches already in memory), for the default study.

    python scripts/bench/dataloader.py [--augment none basic] [--epochs 2] [--out bench_results/dataloader.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import compose, print_table, write_json


def loader_rate(cfg, workers: int, epochs: int) -> float:
    import trainlab.builders as builders

    cfg.data.num_workers = workers
    datamodule = builders.build_datamodule(cfg)
    loader = datamodule.train_dataloader()
    next(iter(loader))  # start the workers before timing
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _labels in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def model_rate(cfg, steps: int = 60) -> float:
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders

    datamodule = builders.build_datamodule(cfg)
    network = builders.build_model(cfg, datamodule)[0].net.train()
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    images, labels = next(iter(datamodule.train_dataloader()))
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
    parser.add_argument("--out", default="bench_results/dataloader.json")
    parser.add_argument("overrides", nargs="*", help="extra trainlab overrides, e.g. model=mlp")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for augment in args.augment:
            cfg = compose(
                [f"augment={augment}", "trainer.accelerator=cpu", *args.overrides], Path(tmp) / augment
            )
            consumption = model_rate(cfg)
            row = {"augment": augment, "model img/s": consumption}
            for workers in (0, 1, 2):
                row[f"loader img/s, {workers} workers"] = loader_rate(cfg, workers, args.epochs)
            row["loader/model (0 workers)"] = row["loader img/s, 0 workers"] / consumption
            rows.append(row)
    print_table("DataLoader vs model consumption (default study: CNN on mnist5k, batch 64)", rows)
    write_json(args.out, {"benchmark": "dataloader", "rows": rows})


if __name__ == "__main__":
    main()
