"""Throughput of the augmentation pipelines: images per second, alone and through a DataLoader.

    python scripts/bench_augment.py                                  # every pipeline, mnist5k, 2,000 images
    python scripts/bench_augment.py --pipelines none basic strong --images 5000 --workers 0 2 4
    python scripts/bench_augment.py --data digits --json bench.json

For each pipeline of conf/augment/ it measures, on the training images of the chosen source:

- `albu`: the whole training pipeline (augmentations, resize, to a uint8 tensor: the
  normalisation runs later, on the model's device) called image by image in this process;
- `loader wN`: a DataLoader over the training set (batches of --batch-size, shuffled) with N
  worker processes, in steady state: the workers are started and warmed up by a first pass,
  the second pass is timed;
- `tv2`: the same augmentations written with torchvision.transforms.v2, where torchvision has
  them (`partial` lists the ones it lacks; `-` when it has none of them).

Every process runs OpenCV and torch on one thread (--threads), as DataLoader workers do, so
the columns compare pipelines, not thread pools. Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from torch.utils.data import DataLoader, Subset

from trainlab.data.datamodule import ImageDataModule
from trainlab.utils.config import plain

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
PIPELINES = sorted(p.stem for p in (CONFIG_DIR / "augment").glob("*.yaml"))


# --- torchvision.transforms.v2 versions of the ready pipelines -----------------------------------


def torchvision_pipeline(name: str, height: int, width: int):
    """(v2.Compose, what it lacks) for a ready pipeline, or (None, reason) when v2 has no equivalent."""
    from torchvision.transforms import v2

    pad = max(1, round(0.125 * max(height, width)))
    apply = v2.RandomApply
    ops: dict[str, tuple[list, str]] = {
        "none": ([], ""),
        "basic": ([v2.RandomHorizontalFlip(0.5), v2.RandomCrop((height, width), padding=pad)], ""),
        "geometric": (
            [
                v2.RandomHorizontalFlip(0.5),
                apply([v2.RandomRotation(15)], p=0.5),
                apply([v2.RandomAffine(0, shear=15, scale=(0.9, 1.1))], p=0.5),
                apply([v2.RandomResizedCrop((height, width), scale=(0.49, 1.0), antialias=True)], p=0.3),
                apply([v2.RandomAffine(0, scale=(0.85, 1.15))], p=0.3),  # ~ crop-and-pad
                v2.RandomPerspective(0.16, p=0.3),
                apply([v2.ElasticTransform(alpha=34.0, sigma=4.0)], p=0.3),
            ],
            "",
        ),
        "color": (
            [
                apply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=0.5),
                v2.RandomAdjustSharpness(1.5, p=0.2),
                v2.RandomInvert(p=0.1),
            ],
            "partial: no random gamma",
        ),
        "kernel": (
            [
                apply(
                    [
                        v2.RandomChoice(
                            [v2.GaussianBlur(3, sigma=(0.3, 1.0)), v2.RandomAdjustSharpness(2.0, p=1.0)]
                        )
                    ],
                    p=0.6,
                )
            ],
            "partial: no box blur, no emboss",
        ),
        "strong": ([v2.RandAugment(num_ops=2, magnitude=9)], "RandAugment's own op list"),
    }
    after_float: dict[str, list] = {
        "noise": [
            apply([v2.GaussianNoise(sigma=0.1)], p=0.3),
            v2.RandomErasing(p=0.3, scale=(0.02, 0.09), value=0.0),
            v2.RandomErasing(p=0.2, scale=(0.02, 0.15), value=0.0),
        ]
    }
    if name == "noise":
        before, note = [], "partial: no salt-and-pepper, no superpixels"
    elif name in ops:
        before, note = ops[name]
    else:
        return None, "no torchvision equivalent"
    # uint8 tensors at the end, as trainlab's pipelines give (the normalisation runs on the
    # model's device); the transforms that need floats get them, and the result goes back to uint8
    steps = [v2.ToImage(), *before]
    if after_float.get(name):
        steps += [
            v2.ToDtype(torch.float32, scale=True),
            *after_float[name],
            v2.ToDtype(torch.uint8, scale=True),
        ]
    return v2.Compose(steps), note


# --- measurements --------------------------------------------------------------------------------


def per_second(count: int, run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def single_process(transform: Callable, images: list[np.ndarray], count: int) -> float:
    def run() -> None:
        for i in range(count):
            transform(images[i % len(images)])

    transform(images[0])  # warm-up (lazy imports, caches)
    return per_second(count, run)


def loader_rate(dataset, workers: int, batch_size: int, count: int) -> float:
    subset = Subset(dataset, list(range(min(count, len(dataset)))))
    loader = DataLoader(
        subset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )

    def one_pass() -> None:
        for _ in loader:
            pass

    one_pass()  # start and warm up the workers
    return per_second(len(subset), one_pass)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="mnist5k", help="a data option of conf/data (default: mnist5k)")
    parser.add_argument("--pipelines", nargs="+", default=PIPELINES, choices=PIPELINES, metavar="NAME")
    parser.add_argument("--images", type=int, default=2000, help="images timed per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to try")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and torch threads per process")
    parser.add_argument(
        "--no-torchvision", action="store_true", help="skip the torchvision.transforms.v2 column"
    )
    parser.add_argument("--json", default="logs/bench/augment.json", help="where to write the results")
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)  # forked DataLoader workers inherit it; torch uses 1 thread there
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        configs = {
            name: compose("train", overrides=[f"data={args.data}", f"augment={name}", "paths.data_dir=data"])
            for name in args.pipelines
        }
    data_cfg = plain(next(iter(configs.values())).data)
    spec = dict(data_cfg["source"])
    source = get_object(spec.pop("_target_"))(**spec)  # loaded once for every pipeline

    rows = []
    header = f"{'pipeline':<10} {'albu':>8} " + " ".join(f"{'loader w' + str(w):>10}" for w in args.workers)
    header += f" {'tv2':>8}  torchvision note"
    print(
        f"images/s on {args.data} ({args.images} images, batch {args.batch_size}, {args.threads} thread(s)/process)"
    )
    print(header)
    print("-" * len(header))
    for name, cfg in configs.items():
        dm = ImageDataModule(
            source=data_cfg["source"], batch_size=args.batch_size, augment=plain(cfg.augment), train_size=None
        )
        dm.source = source  # the source is loaded once above, not once per pipeline
        dm.setup("fit")
        dataset = dm.dataset("train")
        images = [np.asarray(dataset.images[i]) for i in range(min(len(dataset), args.images))]
        pipeline = dataset.transform
        albu = single_process(lambda image, p=pipeline: p(image=image)["image"], images, args.images)
        loaders = {w: loader_rate(dataset, w, args.batch_size, args.images) for w in args.workers}
        tv_rate, note = None, "skipped"
        if not args.no_torchvision:
            height, width, _ = dm.image_shape
            tv, note = torchvision_pipeline(name, height, width)
            if tv is not None:
                try:
                    tv_rate = single_process(tv, images, args.images)
                except Exception as error:  # e.g. v2.ElasticTransform(sigma=4) on 8x8 images
                    note = f"torchvision fails: {str(error).splitlines()[0][:80]}"
        rows.append(
            {
                "pipeline": name,
                "albumentations": albu,
                "loader": loaders,
                "torchvision": tv_rate,
                "note": note,
            }
        )
        line = f"{name:<10} {albu:>8.0f} " + " ".join(f"{loaders[w]:>10.0f}" for w in args.workers)
        line += f" {tv_rate:>8.0f}" if tv_rate else f" {'-':>8}"
        print(f"{line}  {note}", flush=True)

    meta = {
        "data": args.data,
        "images": args.images,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "versions": {
            "albumentations": __import__("albumentations").__version__,
            "torchvision": __import__("torchvision").__version__,
            "torch": torch.__version__,
            "opencv": cv2.__version__,
        },
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
