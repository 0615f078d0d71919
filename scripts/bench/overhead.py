"""Template overhead: training steps/s of trainlab.train against a plain PyTorch loop.

Same network (built by trainlab's own builders, so the same init), data, batch size, optimizer,
schedule and number of steps, measured in one process. trainlab runs with its defaults:
checkpoints, LR monitor, Rich progress bar, divergence guard, layer statistics at their default
interval, W&B (offline) + CSV loggers. Only training time is compared: the steps after a warm-up,
with the time spent in validation (and the checkpoint saved after it) subtracted, since the plain
loop does not validate.

On a small shared machine a whole run can come out a few percent faster or slower than the
next one, whatever it runs; so the runs alternate in ABBA order (plain first on even repeats,
trainlab first on odd ones), each repeat gives a ratio of two neighbouring runs, and the table
reports the median of those ratios, for throughput (steps / total time, which includes the rare
slow steps: layer statistics' samples, epoch ends) and for the median step time.

    python scripts/bench/overhead.py [--steps 200] [--repeats 6] [--model cnn] [--out bench_results/overhead.json] [overrides]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from common import compose, print_table, write_json

WARMUP = 10


def _sync_at_ends_of_timing(steps_done: int, total_steps: int) -> None:
    """On a GPU, wait for the queued work where timing starts and ends (not in between: a sync
    every step would stop the CPU from queueing ahead). Per-step durations are then the CPU's
    view, and only their sum, the throughput, is the GPU's."""
    import torch

    if steps_done in (WARMUP, total_steps) and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepTimer:
    """A Lightning callback: the duration of every training step from WARMUP on, validation (and
    what runs after it in on_validation_end, the best checkpoint's save) excluded."""

    def __new__(cls, *args, **kwargs):  # built lazily so that importing this file needs no Lightning
        import lightning.pytorch as pl

        class _StepTimer(pl.Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []  # after each step: time - validation time so far
                self.excluded = 0.0
                self.validation_start: float | None = None

            def on_train_batch_end(self, trainer, *_):
                _sync_at_ends_of_timing(len(self.ends) + 1, trainer.max_steps)
                self.ends.append(time.perf_counter() - self.excluded)

            def on_validation_start(self, trainer, *_):
                self.validation_start = time.perf_counter()

            def on_validation_end(self, trainer, *_):  # runs after ModelCheckpoint's (added last)
                if self.validation_start is not None:
                    self.excluded += time.perf_counter() - self.validation_start

            @property
            def durations(self) -> list[float]:
                return step_durations(self.ends)

        return _StepTimer()


def trainlab_run(overrides: list[str], steps: int, workdir: Path, index: int) -> list[float]:
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
    return timer.durations


def plain_run(overrides: list[str], steps: int, workdir: Path, index: int) -> list[float]:
    """The loop a researcher would write by hand, on the very same pieces."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders
    from trainlab.run.resources import cheap_cuda_checks_without_gpus

    # A hand-written loop's process never imports Lightning, whose import makes every CUDA check
    # of torch.optim slow on a machine without GPUs; trainlab.train undoes that, and so does this.
    cheap_cuda_checks_without_gpus()
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
    network = builders.build_model(cfg, datamodule)[0].net.to(device)
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps + WARMUP) if cfg.scheduler else None
    loader = datamodule.train_dataloader()
    network.train()
    step, ends = 0, []
    while step < steps + WARMUP:
        for images, labels in loader:
            # uint8 to the device, normalised floats there (as trainlab's DataModule does)
            images = datamodule.network_input(images.to(device, non_blocking=True, memory_format=layout))
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = F.cross_entropy(network(images), labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            _sync_at_ends_of_timing(step, steps + WARMUP)
            ends.append(time.perf_counter())
            if step == steps + WARMUP:
                break
    return step_durations(ends)


def step_durations(ends: list[float]) -> list[float]:
    """The durations of the steps after WARMUP, from the times at which each step ended."""
    return [b - a for a, b in itertools.pairwise(ends[WARMUP - 1 :])]


def abba_pairs(overrides: list[str], steps: int, workdir: Path, repeats: int):
    """Yield (repeat, order, {"plain": durations, "trainlab": durations}), running plain first on
    even repeats and trainlab first on odd ones: a drift of the machine's speed over time then
    favours neither."""
    for i in range(repeats):
        order = ("plain", "trainlab") if i % 2 == 0 else ("trainlab", "plain")
        runs = {}
        for name in order:
            run = plain_run if name == "plain" else trainlab_run
            runs[name] = run(overrides, steps, workdir, i)
        yield i, order, runs


def summarise(durations: list[float]) -> tuple[float, float]:
    """(steps per second, median step in ms) of one run."""
    return len(durations) / sum(durations), 1000 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--out", default="bench_results/overhead.json")
    parser.add_argument("overrides", nargs="*", help="extra trainlab overrides, e.g. data=digits")
    args = parser.parse_args()
    overrides = [f"model={args.model}", "trainer.accelerator=cpu", *args.overrides]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for i, order, runs in abba_pairs(overrides, args.steps, workdir, args.repeats):
            (plain_rate, plain_ms), (rate, ms) = summarise(runs["plain"]), summarise(runs["trainlab"])
            rows.append(
                {
                    "repeat": f"{i} ({order[0]} first)",
                    "plain steps/s": plain_rate,
                    "trainlab steps/s": rate,
                    "throughput ratio": rate / plain_rate,
                    "plain median step ms": plain_ms,
                    "trainlab median step ms": ms,
                    "median-step ratio": plain_ms / ms,
                }
            )
            print_table(f"repeat {i}", rows[-1:])
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0] if key != "repeat"}
    rows.append({"repeat": "median", **median})
    print_table(
        f"Template overhead, model={args.model}, {args.steps} steps after {WARMUP} warm-up, "
        f"overrides {args.overrides or 'none'}",
        rows,
    )
    write_json(
        args.out,
        {
            "benchmark": "overhead",
            "overrides": overrides,
            "steps": args.steps,
            "rows": rows,
            "median_throughput_ratio": median["throughput ratio"],
            "median_step_ratio": median["median-step ratio"],
        },
    )


if __name__ == "__main__":
    main()
