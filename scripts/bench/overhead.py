"""Template overhead: training steps/s of trainlab.train against a plain PyTorch loop.

Same network (built by trainlab's own builders, so the same init), data, batch size, optimizer,
schedule and number of steps, measured in one process. trainlab runs with its defaults:
checkpoints, LR monitor, Rich progress bar, divergence guard, layer statistics at their default
interval, W&B (offline) + CSV loggers. Only training time is compared: the steps after a warm-up,
with the time spent in validation and in writing checkpoints subtracted, since the plain loop
does neither. (Before 2026-12-04 only the validation and what ran inside it was subtracted; the
checkpoints, which Lightning writes at the end of the training epoch, were counted.)

`--lightning` adds a third loop: a bare Lightning `Trainer` on the same network, data, optimizer
and schedule (no logger, checkpoint, progress bar, model summary, validation or callback but the
step timer), i.e. Lightning's own floor, which no template on Lightning can beat.
`--mode host_bound` is the case where a step computes almost nothing and the host's work per
step is all there is: a digits MLP of one hidden layer of 16 units, batch 64, with `--lightning`.

On a small shared machine a whole run can come out a few percent faster or slower than the
next one, whatever it runs; so the runs alternate in ABBA order (plain first on even repeats,
trainlab first on odd ones; bare Lightning, when it runs, in the middle), each repeat gives the
ratios of neighbouring runs, and the table reports the median of those ratios, for throughput
(steps / total time, which includes the rare slow steps: layer statistics' samples, epoch ends)
and for the median step time.

    python scripts/bench/overhead.py [--steps 200] [--repeats 6] [--model cnn] [--lightning] [--out bench_results/overhead.json] [overrides]
    python scripts/bench/overhead.py --mode host_bound [--repeats 8]
    OMP_NUM_THREADS=1 python scripts/bench/overhead.py --mode host_bound --cpu-time   # on a busy machine
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

# What a step's time is read from: the wall clock, or with --cpu-time the CPU time of the main
# thread (time.thread_time), which other processes on a shared machine disturb much less; use it
# with OMP_NUM_THREADS=1 (torch's other threads would spin while waiting, and are not counted).
# It leaves out the work of W&B's service process and of the progress bar's redraw thread.
clock = time.perf_counter

# Named cases: (model, overrides, also run bare Lightning)
MODES = {
    "default": ("cnn", [], False),
    "host_bound": ("mlp", ["data=digits", "model.depth=1", "model.width=16", "data.batch_size=64"], True),
}


def _sync_at_ends_of_timing(steps_done: int, total_steps: int) -> None:
    """On a GPU, wait for the queued work where timing starts and ends (not in between: a sync
    every step would stop the CPU from queueing ahead). Per-step durations are then the CPU's
    view, and only their sum, the throughput, is the GPU's."""
    import torch

    if steps_done in (WARMUP, total_steps) and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepTimer:
    """A Lightning callback: the duration of every training step from WARMUP on, with validation
    and checkpoint writing excluded (neither loop compared with trainlab validates or writes
    checkpoints; ModelCheckpoint writes at the end of a training epoch, after validation)."""

    def __new__(cls, *args, **kwargs):  # built lazily so that importing this file needs no Lightning
        import lightning.pytorch as pl

        class _StepTimer(pl.Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []  # after each step: time - excluded time so far
                self.excluded = 0.0
                self.validation_start: float | None = None

            def setup(self, trainer, pl_module, stage):
                save = trainer.save_checkpoint

                def timed_save(*args, **kwargs):  # a benchmark's wrapper: time the writes
                    start = clock()
                    try:
                        return save(*args, **kwargs)
                    finally:
                        self.excluded += clock() - start

                trainer.save_checkpoint = timed_save

            def on_train_batch_end(self, trainer, *_):
                _sync_at_ends_of_timing(len(self.ends) + 1, trainer.max_steps)
                self.ends.append(clock() - self.excluded)

            def on_validation_start(self, trainer, *_):
                self.validation_start = clock()

            def on_validation_end(self, trainer, *_):
                if self.validation_start is not None:
                    self.excluded += clock() - self.validation_start
                    self.validation_start = None

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
    cudagraphs = cfg.get("compile") and cfg.get("compile_mode") in ("reduce-overhead", "max-autotune")
    while step < steps + WARMUP:
        for images, labels in loader:
            if cudagraphs:  # as trainlab's CudaGraphSteps callback does
                torch.compiler.cudagraph_mark_step_begin()
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
            ends.append(clock())
            if step == steps + WARMUP:
                break
    return step_durations(ends)


def lightning_run(overrides: list[str], steps: int, workdir: Path, index: int) -> list[float]:
    """A bare Lightning Trainer on the very same pieces: Lightning's floor. No logger, checkpoint,
    progress bar, model summary, validation or callback but the step timer; the step is the
    plain loop's (forward, cross-entropy, backward), and the schedule steps every optimizer step."""
    import lightning.pytorch as pl
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders
    from trainlab.run.resources import cheap_cuda_checks_without_gpus

    cheap_cuda_checks_without_gpus()
    cfg = compose([*overrides, f"trainer.max_steps={steps + WARMUP}"], workdir / f"lightning{index}")
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = builders.build_datamodule(cfg)
    network = builders.build_model(cfg, datamodule)[0].net

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = network

        def on_after_batch_transfer(self, batch, dataloader_idx):
            images, labels = batch  # uint8 to the device, normalised floats there, as trainlab's run
            return datamodule.network_input(images), labels

        def training_step(self, batch, batch_idx):
            images, labels = batch
            return F.cross_entropy(self.net(images), labels)

        def configure_optimizers(self):
            optimizer = instantiate(cfg.optimizer)(self.parameters())
            if not cfg.scheduler:
                return optimizer
            scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps + WARMUP)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_steps=steps + WARMUP,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=workdir / f"lightning{index}",
    )
    trainer.fit(Bare(), train_dataloaders=datamodule.train_dataloader())
    return timer.durations


def step_durations(ends: list[float]) -> list[float]:
    """The durations of the steps after WARMUP, from the times at which each step ended."""
    return [b - a for a, b in itertools.pairwise(ends[WARMUP - 1 :])]


RUNS = {"plain": plain_run, "lightning": lightning_run, "trainlab": trainlab_run}


def abba_pairs(overrides: list[str], steps: int, workdir: Path, repeats: int, lightning: bool = False):
    """Yield (repeat, order, {"plain": durations, "trainlab": durations[, "lightning": ...]}),
    running plain first on even repeats and trainlab first on odd ones (bare Lightning, if asked
    for, between them): a drift of the machine's speed over time then favours neither."""
    names = ("plain", "lightning", "trainlab") if lightning else ("plain", "trainlab")
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        runs = {name: RUNS[name](overrides, steps, workdir, i) for name in order}
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
    parser.add_argument("--mode", choices=sorted(MODES), default=None, help="a named case (module docstring)")
    parser.add_argument("--model", default=None, help="default: the mode's (cnn)")
    parser.add_argument("--lightning", action="store_true", help="also run a bare Lightning Trainer")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time steps by the main thread's CPU time (see `clock`)"
    )
    parser.add_argument("--out", default="bench_results/overhead.json")
    parser.add_argument("overrides", nargs="*", help="extra trainlab overrides, e.g. data=digits")
    args = parser.parse_args()
    if args.cpu_time:
        global clock
        clock = time.thread_time
    model, mode_overrides, lightning = MODES[args.mode or "default"]
    model = args.model or model
    lightning = lightning or args.lightning
    overrides = [f"model={model}", "trainer.accelerator=cpu", *mode_overrides, *args.overrides]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # the first run of each loop in a process pays for lazy imports and first calls
        # (scripts/bench/first_step.py): one short untimed run of each first
        for _ in abba_pairs(overrides, 2 * WARMUP, workdir / "untimed", 1, lightning):
            pass
        for i, order, runs in abba_pairs(overrides, args.steps, workdir, args.repeats, lightning):
            rows.append(ratio_row(f"{i} ({order[0]} first)", runs))
            print_table(f"repeat {i}", rows[-1:])
    spread = {
        key: (min(row[key] for row in rows), max(row[key] for row in rows))
        for key in rows[0]
        if key != "repeat"
    }
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0] if key != "repeat"}
    rows.append({"repeat": "median", **median})
    print_table(
        f"Template overhead, {args.mode or 'model=' + model}, {'CPU time, ' if args.cpu_time else ''}{args.steps} steps after {WARMUP} "
        f"warm-up, overrides {[*mode_overrides, *args.overrides] or 'none'}",
        rows,
    )
    ranges = [
        {"repeat": end, **{key: pair[i] for key, pair in spread.items()}}
        for i, end in enumerate(("min", "max"))
    ]
    print_table("Range over the repeats", ranges)
    payload = {
        "benchmark": "overhead",
        "mode": args.mode,
        "clock": "thread_time" if args.cpu_time else "perf_counter",
        "overrides": overrides,
        "steps": args.steps,
        "rows": rows,
        "range": ranges,
        "median_throughput_ratio": median["throughput ratio"],
        "median_step_ratio": median["median-step ratio"],
    }
    if lightning:
        payload["median_lightning_ratio"] = median["lightning ratio"]
        payload["median_trainlab_over_lightning"] = median["trainlab / lightning"]
    write_json(args.out, payload)


def ratio_row(repeat: str, runs: dict[str, list[float]]) -> dict:
    """One repeat's rates and ratios: trainlab / plain (`throughput ratio`), and with bare
    Lightning also Lightning / plain and trainlab / Lightning."""
    (plain_rate, plain_ms), (rate, ms) = summarise(runs["plain"]), summarise(runs["trainlab"])
    row = {"repeat": repeat, "plain steps/s": plain_rate}
    if "lightning" in runs:
        lightning_rate, lightning_ms = summarise(runs["lightning"])
        row["lightning steps/s"] = lightning_rate
    row |= {"trainlab steps/s": rate, "throughput ratio": rate / plain_rate}
    if "lightning" in runs:
        row |= {"lightning ratio": lightning_rate / plain_rate, "trainlab / lightning": rate / lightning_rate}
    row |= {
        "plain median step ms": plain_ms,
        "trainlab median step ms": ms,
        "median-step ratio": plain_ms / ms,
    }
    if "lightning" in runs:
        row |= {"lightning median step ms": lightning_ms}
    return row


if __name__ == "__main__":
    main()
