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
`--pieces` adds a fourth: the same bare Trainer doing, with Lightning's stock pieces and in the
cheapest way they allow, what trainlab's defaults ask of Lightning and its loggers (`self.log` of
the step loss on logging steps and of the epoch's metrics, validation every epoch, best and last
checkpoints, the learning rate, W&B and CSV loggers; `lightning_run`): what those pieces cost
before trainlab adds anything of its own.
`--mode host_bound` is the case where a step computes almost nothing and the host's work per
step is all there is: a digits MLP of one hidden layer of 16 units, batch 64, with `--lightning`
and `--pieces`.

On a small shared machine a whole run can come out a few percent faster or slower than the
next one, whatever it runs; so the runs alternate in ABBA order (plain first on even repeats,
trainlab first on odd ones; bare Lightning, when it runs, in the middle), each repeat gives the
ratios of neighbouring runs, and the table reports the median of those ratios, for throughput
(steps / total time, which includes the rare slow steps: layer statistics' samples, epoch ends)
and for the median step time. A last table says, for each loop on Lightning, where its time goes:
the mean duration of the epochs' first steps (which hold the previous epoch's end), of the logging
steps and of the others, and what each kind costs beyond a median step, spread over all steps.

    python scripts/bench/overhead.py [--steps 200] [--repeats 6] [--model cnn] [--lightning] [--pieces] [--out bench_results/overhead.json] [overrides]
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

# Named cases: (model, overrides, the Lightning loops also run)
MODES = {
    "default": ("cnn", [], ()),
    "host_bound": (
        "mlp",
        ["data=digits", "model.depth=1", "model.width=16", "data.batch_size=64"],
        ("lightning", "pieces"),
    ),
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
                self.kinds: list[str] = []  # what each step was (see StepKinds)
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

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                _sync_at_ends_of_timing(len(self.ends) + 1, trainer.max_steps)
                self.ends.append(clock() - self.excluded)
                every = trainer.log_every_n_steps  # global_step counts this step by now
                logging = bool(trainer.loggers) and every and trainer.global_step % every == 0
                self.kinds.append("epoch's first" if batch_idx == 0 else "logging" if logging else "other")

            def on_validation_start(self, trainer, *_):
                self.validation_start = clock()

            def on_validation_end(self, trainer, *_):
                if self.validation_start is not None:
                    self.excluded += clock() - self.validation_start
                    self.validation_start = None

            @property
            def durations(self) -> list[float]:
                return StepKinds(step_durations(self.ends), self.kinds[WARMUP:])

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


def lightning_run(
    overrides: list[str], steps: int, workdir: Path, index: int, pieces: bool = False
) -> list[float]:
    """A bare Lightning Trainer on the very same pieces: Lightning's floor. No logger, checkpoint,
    progress bar, model summary, validation or callback but the step timer; the step is the
    plain loop's (forward, cross-entropy, backward), and the schedule steps every optimizer step.

    With `pieces`, the same Trainer also does, in the cheapest way Lightning's stock pieces allow,
    what trainlab's defaults ask of Lightning and its loggers: the step loss to the loggers on
    the logging steps (`train/loss_step`, and `train/loss` for callbacks), the epoch's mean loss
    and accuracy at its end (summed on the device, no torchmetrics), validation every epoch with
    its loss and accuracy, the best (by `val/acc`) and the last checkpoint (two ModelCheckpoint
    callbacks, as in conf/callbacks/model_checkpoint.yaml), the learning rate every epoch, and
    Lightning's own W&B (offline) and CSV loggers. Nothing of trainlab's own: no progress bar,
    divergence guard, layer statistics, images per second or summary.json. The timed steps leave
    out validation and the checkpoint writes, as for trainlab."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    import trainlab.builders as builders
    from trainlab.run.resources import cheap_cuda_checks_without_gpus

    cheap_cuda_checks_without_gpus()
    name = "pieces" if pieces else "lightning"
    cfg = compose([*overrides, f"trainer.max_steps={steps + WARMUP}"], workdir / f"{name}{index}")
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = builders.build_datamodule(cfg)
    network = builders.build_model(cfg, datamodule)[0].net

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = network
            self.sums: dict[str, torch.Tensor] = {}  # loss, right predictions, examples

        def on_after_batch_transfer(self, batch, dataloader_idx):
            images, labels = batch  # uint8 to the device, normalised floats there, as trainlab's run
            return datamodule.network_input(images), labels

        def training_step(self, batch, batch_idx):
            images, labels = batch
            logits = self.net(images)
            loss = F.cross_entropy(logits, labels)
            if pieces:
                self._accumulate(logits, labels, loss)
                every = self.trainer.log_every_n_steps
                if every and (self.trainer.global_step + 1) % every == 0:
                    self.log("train/loss_step", loss)
                    self.log("train/loss", loss, logger=False)
            return loss

        def _accumulate(self, logits, labels, loss) -> None:
            parts = (
                loss.detach() * len(labels),
                (logits.argmax(1) == labels).sum(),
                labels.new_tensor(len(labels)),
            )
            for key, part in zip(("loss", "right", "count"), parts, strict=True):
                self.sums[key] = self.sums[key] + part if key in self.sums else part

        def on_train_epoch_end(self) -> None:
            if pieces and self.sums:
                count = self.sums["count"]
                self.log("train/acc", self.sums["right"] / count, prog_bar=True)
                self.log("train/loss_epoch", self.sums["loss"] / count, prog_bar=True)
                self.log("train/loss", self.sums["loss"] / count, logger=False)
                self.sums = {}

        def validation_step(self, batch, batch_idx):
            images, labels = batch
            logits = self.net(images)
            loss = F.cross_entropy(logits, labels)
            self.log("val/loss", loss, on_epoch=True, prog_bar=True)
            right = (logits.argmax(1) == labels).sum()
            self.sums["val_right"] = self.sums.get("val_right", 0) + right
            self.sums["val_count"] = self.sums.get("val_count", 0) + len(labels)

        def on_validation_epoch_end(self) -> None:
            if "val_count" in self.sums:
                self.log("val/acc", self.sums.pop("val_right") / self.sums.pop("val_count"), prog_bar=True)

        def configure_optimizers(self):
            optimizer = instantiate(cfg.optimizer)(self.parameters())
            if not cfg.scheduler:
                return optimizer
            scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps + WARMUP)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    timer = StepTimer()
    callbacks, loggers, settings = [timer], False, {}
    if pieces:
        from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger, WandbLogger

        run_dir = workdir / f"{name}{index}"
        callbacks += [
            ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/acc", mode="max", save_top_k=1),
            ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1),
            LearningRateMonitor(logging_interval="epoch"),
        ]
        loggers = [WandbLogger(offline=True, save_dir=str(run_dir)), CSVLogger(run_dir)]
        settings = {"log_every_n_steps": cfg.trainer.log_every_n_steps}
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_steps=steps + WARMUP,
        logger=loggers,
        enable_checkpointing=pieces,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=workdir / f"{name}{index}",
        **settings,
    )
    if pieces:
        trainer.fit(Bare(), datamodule=datamodule)
        loggers[0].experiment.finish()
    else:
        trainer.fit(Bare(), train_dataloaders=datamodule.train_dataloader())
    return timer.durations


def lightning_pieces_run(overrides: list[str], steps: int, workdir: Path, index: int) -> list[float]:
    return lightning_run(overrides, steps, workdir, index, pieces=True)


class StepKinds(list):
    """Step durations that also say what each step was: `epoch's first` (its duration holds the
    end of the previous epoch, less validation and checkpoint writes, and the start of this one),
    `logging` (Lightning sends the step's metrics to the loggers) or `other`."""

    def __init__(self, durations: list[float], kinds: list[str]) -> None:
        super().__init__(durations)
        self.kinds = kinds


def breakdown_rows(loop: str, runs: list[StepKinds]) -> list[dict]:
    """Where a loop's time goes, over all its repeats: for each kind of step, how many, their
    mean duration, and what they cost beyond a median step, spread over every step."""
    durations = [d for run in runs for d in run]
    kinds = [k for run in runs for k in run.kinds]
    median = statistics.median(durations)
    rows = []
    for kind in ("other", "logging", "epoch's first"):
        mine = [d for d, k in zip(durations, kinds, strict=True) if k == kind]
        if mine:
            rows.append(
                {
                    "loop": loop,
                    "steps": kind,
                    "count": len(mine),
                    "mean ms": 1000 * statistics.mean(mine),
                    "beyond a median step, ms per step of the run": 1000
                    * (sum(mine) - len(mine) * median)
                    / len(durations),
                }
            )
    return rows


def step_durations(ends: list[float]) -> list[float]:
    """The durations of the steps after WARMUP, from the times at which each step ended."""
    return [b - a for a, b in itertools.pairwise(ends[WARMUP - 1 :])]


RUNS = {
    "plain": plain_run,
    "lightning": lightning_run,
    "pieces": lightning_pieces_run,
    "trainlab": trainlab_run,
}


def abba_pairs(
    overrides: list[str], steps: int, workdir: Path, repeats: int, lightning: tuple[str, ...] = ()
):
    """Yield (repeat, order, {"plain": durations, "trainlab": durations[, "lightning": ...,
    "pieces": ...]}), running plain first on even repeats and trainlab first on odd ones (the
    Lightning loops asked for between them): a drift of the machine's speed over time then
    favours neither."""
    names = ("plain", *lightning, "trainlab")
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
        "--pieces", action="store_true", help="also run bare Lightning with the defaults' pieces (docstring)"
    )
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
    asked = (("lightning",) if args.lightning else ()) + (("pieces",) if args.pieces else ())
    lightning = tuple(name for name in ("lightning", "pieces") if name in lightning or name in asked)
    overrides = [f"model={model}", "trainer.accelerator=cpu", *mode_overrides, *args.overrides]
    rows = []
    timed: dict[str, list[StepKinds]] = {}  # each Lightning-based loop's runs
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # the first run of each loop in a process pays for lazy imports and first calls
        # (scripts/bench/first_step.py): one short untimed run of each first
        for _ in abba_pairs(overrides, 2 * WARMUP, workdir / "untimed", 1, lightning):
            pass
        for i, order, runs in abba_pairs(overrides, args.steps, workdir, args.repeats, lightning):
            rows.append(ratio_row(f"{i} ({order[0]} first)", runs))
            print_table(f"repeat {i}", rows[-1:])
            for loop, durations in runs.items():
                if isinstance(durations, StepKinds):
                    timed.setdefault(loop, []).append(durations)
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
    breakdown = [row for loop, runs in timed.items() for row in breakdown_rows(loop, runs)]
    print_table("Where the time goes, over all repeats (kinds of steps: StepKinds)", breakdown)
    payload = {
        "benchmark": "overhead",
        "mode": args.mode,
        "clock": "thread_time" if args.cpu_time else "perf_counter",
        "overrides": overrides,
        "steps": args.steps,
        "rows": rows,
        "range": ranges,
        "breakdown": breakdown,
        "median_throughput_ratio": median["throughput ratio"],
        "median_step_ratio": median["median-step ratio"],
    }
    if "lightning" in lightning:
        payload["median_lightning_ratio"] = median["lightning ratio"]
        payload["median_trainlab_over_lightning"] = median["trainlab / lightning"]
    if "pieces" in lightning:
        payload["median_trainlab_over_pieces"] = median["trainlab / pieces"]
    write_json(args.out, payload)


def ratio_row(repeat: str, runs: dict[str, list[float]]) -> dict:
    """One repeat's rates and ratios: trainlab / plain (`throughput ratio`), with bare Lightning
    also Lightning / plain and trainlab / Lightning, and with Lightning's pieces pieces / Lightning
    and trainlab / pieces."""
    (plain_rate, plain_ms), (rate, ms) = summarise(runs["plain"]), summarise(runs["trainlab"])
    loops = {name: summarise(runs[name]) for name in ("lightning", "pieces") if name in runs}
    row = {"repeat": repeat, "plain steps/s": plain_rate}
    row |= {f"{name} steps/s": loop_rate for name, (loop_rate, _) in loops.items()}
    row |= {"trainlab steps/s": rate, "throughput ratio": rate / plain_rate}
    if "lightning" in loops:
        lightning_rate = loops["lightning"][0]
        row |= {"lightning ratio": lightning_rate / plain_rate, "trainlab / lightning": rate / lightning_rate}
        if "pieces" in loops:
            row["pieces / lightning"] = loops["pieces"][0] / lightning_rate
    if "pieces" in loops:
        row["trainlab / pieces"] = rate / loops["pieces"][0]
    row |= {
        "plain median step ms": plain_ms,
        "trainlab median step ms": ms,
        "median-step ratio": plain_ms / ms,
    }
    row |= {f"{name} median step ms": loop_ms for name, (_, loop_ms) in loops.items()}
    return row


if __name__ == "__main__":
    main()
