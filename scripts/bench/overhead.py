"""Template overhead: training steps/s of trainlab.train against a plain PyTorch loop.

Same network (built by trainlab's own builders, so the same init), data, batch size, optimizer,
schedule and number of steps, measured in one process, alternating plain/trainlab. trainlab runs
with its defaults: checkpoints, LR monitor, Rich progress bar, divergence guard, layer statistics
at their default interval, W&B (offline) + CSV loggers. Only training time is compared: steps
after a warm-up, with the time spent in validation (and the checkpoint saved after it)
subtracted, since the plain loop does not validate.

    python scripts/bench/overhead.py [--steps 300] [--repeats 3] [--model cnn] [--out bench_results/overhead.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import compose, print_table, write_json

WARMUP = 10


class StepTimer:
    """A Lightning callback: training-loop time from step WARMUP on, validation excluded."""

    def __new__(cls, *args, **kwargs):  # built lazily so that importing this file needs no Lightning
        import lightning.pytorch as pl

        class _StepTimer(pl.Callback):
            def __init__(self) -> None:
                self.start = self.validation = None
                self.excluded = 0.0
                self.steps = 0

            def on_train_batch_start(self, trainer, *_):
                if trainer.global_step == WARMUP and self.start is None:
                    self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, *_):
                if self.start is not None:
                    self.steps = trainer.global_step - WARMUP
                    self.end = time.perf_counter()

            def on_validation_start(self, trainer, *_):
                self.validation = time.perf_counter()

            def on_validation_end(self, trainer, *_):  # runs after ModelCheckpoint's (added last)
                if self.start is not None and self.validation is not None:
                    self.excluded += time.perf_counter() - self.validation

            @property
            def steps_per_s(self) -> float:
                return self.steps / (self.end - self.start - self.excluded)

        return _StepTimer()


def trainlab_run(overrides: list[str], steps: int, workdir: Path, index: int) -> float:
    import trainlab.builders as builders
    from trainlab.train import train

    timer = StepTimer()
    original = builders.build_callbacks
    builders.build_callbacks = lambda cfg, has_logger: [*original(cfg, has_logger), timer]
    try:
        cfg = compose(
            [*overrides, f"trainer.max_steps={steps + WARMUP}", "test=false"], workdir / f"trainlab{index}"
        )
        summary = train(cfg)
        assert summary["status"] == "completed", summary
    finally:
        builders.build_callbacks = original
    return timer.steps_per_s


def plain_run(overrides: list[str], steps: int, workdir: Path, index: int) -> float:
    """The loop a researcher would write by hand, on the very same pieces."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders

    cfg = compose([*overrides, f"trainer.max_steps={steps + WARMUP}"], workdir / f"plain{index}")
    pl.seed_everything(cfg.seed, workers=True)
    gpu = cfg.trainer.accelerator in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and torch.cuda.is_available()
    )
    device = torch.device("cuda" if gpu else "cpu")
    # the same precision and memory layout as the trainer and trainlab's build_model use
    autocast_dtype = torch.bfloat16 if "bf16" in str(cfg.trainer.precision) else None
    layout = torch.channels_last if cfg.get("channels_last") else torch.contiguous_format
    datamodule = builders.build_datamodule(cfg)
    network = builders.build_model(cfg, datamodule).net.to(device)
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps + WARMUP) if cfg.scheduler else None
    loader = datamodule.train_dataloader()
    network.train()
    step, start = 0, None
    while step < steps + WARMUP:
        for images, labels in loader:
            if step == WARMUP:
                torch.cuda.synchronize() if gpu else None
                start = time.perf_counter()
            images = images.to(device, non_blocking=True, memory_format=layout)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = F.cross_entropy(network(images), labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if step == steps + WARMUP:
                break
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--out", default="bench_results/overhead.json")
    parser.add_argument("overrides", nargs="*", help="extra trainlab overrides, e.g. data=digits")
    args = parser.parse_args()
    overrides = [f"model={args.model}", "trainer.accelerator=cpu", *args.overrides]
    rows, plain, template = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for i in range(args.repeats):
            plain.append(plain_run(overrides, args.steps, workdir, i))
            template.append(trainlab_run(overrides, args.steps, workdir, i))
            rows.append(
                {
                    "repeat": i,
                    "plain steps/s": plain[-1],
                    "trainlab steps/s": template[-1],
                    "ratio": template[-1] / plain[-1],
                }
            )
    ratio = statistics.median(t / p for t, p in zip(template, plain, strict=True))
    rows.append(
        {
            "repeat": "median",
            "plain steps/s": statistics.median(plain),
            "trainlab steps/s": statistics.median(template),
            "ratio": ratio,
        }
    )
    print_table(f"Template overhead, model={args.model}, {args.steps} steps after {WARMUP} warm-up", rows)
    write_json(
        args.out,
        {
            "benchmark": "overhead",
            "overrides": overrides,
            "steps": args.steps,
            "rows": rows,
            "median_ratio": ratio,
        },
    )


if __name__ == "__main__":
    main()
