"""Cost of one layer-statistics sample: the time LayerStats' hooks add to a training step's
forward and backward, on a real batch of the default study, with and without W&B histograms.

Each repeat times a forward + backward with the hooks in place and one without, on the same
batch; the table reports the median extra time and the median time inside each hook. The
flush that follows a sample (one read-back, the CSV, the loggers) is not included.

    python scripts/bench/layer_stats.py [--repeats 12] [--out bench_results/layer_stats.json] [overrides]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from common import compose, print_table, write_json

HOOKS = ("_before_activation", "_after_activation", "_on_gradient", "_histogram")


def time_hooks(callback) -> dict[str, float]:
    """Wrap each of the callback's hooks to add up the seconds spent in it, in the dict returned."""
    timings: dict[str, float] = {}
    for name in HOOKS:
        hook = getattr(callback, name)

        def timed(*args, _hook=hook, _name=name, **kwargs):
            start = time.perf_counter()
            result = _hook(*args, **kwargs)
            timings[_name] = timings.get(_name, 0.0) + time.perf_counter() - start
            return result

        setattr(callback, name, timed)
    return timings


def timed_sample(callback, net, images, labels, timings: dict[str, float]) -> float:
    """Seconds that one sampled forward + backward takes beyond a bare one; `timings` gets the
    seconds spent in each hook."""
    import torch.nn.functional as F

    timings.clear()
    callback._start_sample(step=0)
    start = time.perf_counter()
    F.cross_entropy(net(images), labels).backward()
    sampled = time.perf_counter() - start
    callback._remove_hooks()
    start = time.perf_counter()
    F.cross_entropy(net(images), labels).backward()
    return sampled - (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--out", default="bench_results/layer_stats.json")
    parser.add_argument("overrides", nargs="*", help="trainlab overrides, e.g. model=resnet")
    args = parser.parse_args()

    import trainlab.builders as builders
    from trainlab.callbacks.layer_stats import LayerStats

    cfg = compose(["trainer.accelerator=cpu", *args.overrides], Path(tempfile.mkdtemp()))
    datamodule = builders.build_datamodule(cfg)
    model, _ = builders.build_model(cfg, datamodule)
    net = model.net
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.network_batches()))
    rows = []
    for histograms in (True, False):
        callback = LayerStats()
        callback.on_fit_start(SimpleNamespace(loggers=[]), model)  # finds the layers
        callback._wandb = histograms  # as with a WandbLogger attached
        timings = time_hooks(callback)
        extra, inside = [], []
        for repeat in range(args.repeats + 2):  # the first two warm up
            seconds = timed_sample(callback, net, images, labels, timings)
            if repeat >= 2:
                extra.append(seconds)
                inside.append(dict(timings))
        rows.append(
            {
                "W&B histograms": histograms,
                "layers": len(callback._names),
                "extra ms per sample": 1000 * statistics.median(extra),
                **{f"{name.strip('_')} ms": 1000 * statistics.median(t.get(name, 0.0) for t in inside) for name in HOOKS},
            }
        )  # fmt: skip
    print_table(f"One layer-statistics sample, overrides {args.overrides or 'none'}", rows)
    write_json(args.out, {"benchmark": "layer_stats", "overrides": args.overrides, "rows": rows})


if __name__ == "__main__":
    main()
