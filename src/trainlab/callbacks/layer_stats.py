"""Per-layer statistics of a network in training, as in the figures of Glorot & Bengio (2010,
"Understanding the difficulty of training deep feedforward neural networks", Fig. 2-7) and He et
al. (2015, "Delving deep into rectifiers", Fig. 2-3): how activations, gradients and updates
change with depth, at init and as training goes on.

A layer is one call of an activation module (ReLU, Tanh, Sigmoid, ..., trainlab's Maxout): its
input is the pre-activation, its output the activation, and the weight layer (Linear/Conv) called
last before it is the layer whose weights produced it. On a sampled training step, for each layer:

    pre_act_mean, pre_act_std   mean and std of the pre-activation (all elements of the batch)
    act_mean, act_std           mean and std of the activation
    saturated                   tanh: fraction of |y| > threshold; sigmoid: y > threshold or
                                y < 1 - threshold (threshold 0.99). Other activations: not logged
    dead                        rectifiers (ReLU family, GELU, SiLU, ...): fraction of units whose
                                output is <= 0 for every example of the batch (ReLU: exactly 0, so
                                no gradient reaches the unit's weights). A unit is a feature of a
                                vector, or a channel of a feature map (all positions pooled, as a
                                conv shares its weights over them). Other activations: not logged
    unit_diversity              sqrt(mean over examples (and positions) of the variance across
                                units / the variance of all elements), in [0, 1]: 0 when every
                                unit of the layer computes the same value (a symmetric layer,
                                e.g. constant init), near 1 when units differ more than examples
    grad_std                    std of the back-propagated gradient dLoss/d(pre-activation)
                                (the loss as the LightningModule returns it, a batch mean)
    weight_grad_norm            ||dLoss/dW|| (Frobenius) of the weight layer, at the optimizer step
    update_ratio                ||W_after - W_before|| / ||W_before|| over that optimizer step

Cost: hooks exist only during a sampled step (every `every_n_steps` steps, step 0 = at init), so
the other steps run the bare model (compiled, under compile=true: a sampled step runs eagerly);
statistics stay on the device until one read-back per sample.
"""

from __future__ import annotations

import csv
import logging
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch import Tensor, nn

from trainlab.init.core import WEIGHT_LAYERS, module_nonlinearity

log = logging.getLogger(__name__)

STATS = (
    "pre_act_mean",
    "pre_act_std",
    "act_mean",
    "act_std",
    "saturated",
    "dead",
    "unit_diversity",
    "grad_std",
    "weight_grad_norm",
    "update_ratio",
)
# Activations whose units can die: flat (ReLU) or nearly flat (the smooth and leaky rectifiers)
# for negative inputs; their output is <= 0 exactly where their input is.
RECTIFIERS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)
SATURATING = (nn.Tanh, nn.Sigmoid)
CSV_FIELDS = ("step", "layer", "depth", "stat", "value")
HISTOGRAM_SAMPLE = 16384  # values per W&B histogram: 256 per bin on average (64 bins)


def histogram(values: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """torch.histc's counts of the finite values and their (min, max), computed on the device.

    histc takes its range as Python numbers, and a mask of the finite values has a size known
    only on the device: on a GPU each is a host-device sync, 2 per histogram. Here the range
    stays a tensor and non-finite values count with weight 0. A constant tensor falls in the
    middle bin (histc's range [c - 1, c + 1]); with no finite value every count is 0.
    """
    finite = torch.isfinite(values)
    low = torch.where(finite, values, math.inf).amin()
    high = torch.where(finite, values, -math.inf).amax()
    spread = high > low
    start = torch.where(spread, low, low - 1.0)
    width = torch.where(spread, high - low, 2.0)
    position = ((torch.where(finite, values, start) - start) * bins / width).long().clamp_(0, bins - 1)
    counts = torch.zeros(bins, device=values.device).index_add_(0, position, finite.to(torch.float32))
    return counts, torch.stack([low, high])


def is_activation(module: nn.Module) -> bool:
    """An activation module: one trainlab's init schemes take a gain from (incl. Maxout), or a
    rectifier or saturating unit."""
    return isinstance(module, RECTIFIERS + SATURATING) or module_nonlinearity(module) is not None


@dataclass
class _Layer:
    name: str  # module path in the network, e.g. blocks.3 (the block of layer -> norm -> act)
    depth: int  # 1-based position in the forward pass
    weight: nn.Module | None  # the weight layer called last before the activation
    values: dict[str, Tensor] = field(default_factory=dict)  # stat -> 0-d tensor, on the device
    histograms: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


@dataclass
class _Sample:
    step: int
    layers: list[_Layer] = field(default_factory=list)
    calls: dict[nn.Module, int] = field(default_factory=dict)  # activation calls so far
    open: dict[nn.Module, _Layer] = field(default_factory=dict)  # between pre- and post-hook
    last_weight: nn.Module | None = None
    weights_before: dict[nn.Module, Tensor] | None = None  # copies at the optimizer step


class LayerStats(pl.Callback):
    """Log per-layer statistics (see the module's docstring) every `every_n_steps` training steps.

    Args:
        every_n_steps: sample the training steps whose global step is a multiple of this (step 0,
            the first batch, sees the network at init).
        saturation_threshold: a tanh unit is saturated when |y| > threshold, a sigmoid when
            y > threshold or y < 1 - threshold.
        histograms: also send histograms of pre-activations, activations and gradients to W&B
            (only when a WandbLogger is attached).
        plots: after fit, write `layer_stats_<stat>.png` (the statistic against depth, at the
            first and the last sampled step) in the run directory, and send them to W&B (not
            under fast_dev_run).
        filename: the CSV written in the run directory (trainer.default_root_dir), long format
            `step, layer, depth, stat, value`, appended at every sample.
        csv_logger: also send the numbers to Lightning's CSVLogger (one column per layer and
            statistic in csv/metrics.csv); off, as the CSV above holds them.

    Metrics `layers/<stat>/L<depth>_<layer>` go to the trainer's loggers with the sampled step.
    Only the global-zero process measures (every DDP rank runs the same network).
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        saturation_threshold: float = 0.99,
        histograms: bool = True,
        plots: bool = True,
        filename: str = "layer_stats.csv",
        csv_logger: bool = False,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.layer_stats.every_n_steps={every_n_steps} must be >= 1.")
        if not 0.5 < saturation_threshold < 1.0:
            raise ValueError(
                f"callbacks.layer_stats.saturation_threshold={saturation_threshold} must be in (0.5, 1)."
            )
        self.every_n_steps = every_n_steps
        self.threshold = saturation_threshold
        self.histograms = histograms
        self.plots = plots
        self.filename = filename
        self.csv_logger = csv_logger
        self.rows: list[dict] = []  # everything recorded, as in the CSV
        self._names: dict[nn.Module, str] = {}
        self._weights: list[nn.Module] = []
        self._handles: list = []
        self._sample: _Sample | None = None
        self._eager: AbstractContextManager | None = None  # force_eager, on a sampled step
        self._last_step: int | None = None
        self._wandb = False

    # --- setup ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        network = getattr(pl_module, "net", pl_module)
        self._names = {
            m: self._layer_name(network, name) for name, m in network.named_modules() if is_activation(m)
        }
        self._weights = [m for m in network.modules() if isinstance(m, WEIGHT_LAYERS)]
        self._wandb = self.histograms and any(isinstance(lg, WandbLogger) for lg in trainer.loggers)
        if not self._names:
            log.info("layer_stats: the network has no activation module; no layer statistics.")

    @staticmethod
    def _layer_name(network: nn.Module, name: str) -> str:
        """The block's path where the activation sits in a `layer -> norm -> act` Sequential, else
        the activation's own path (e.g. a residual block's `act`)."""
        parent_name, _, _ = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        return parent_name if parent_name and isinstance(parent, nn.Sequential) else name

    def _sampled(self, trainer: pl.Trainer) -> bool:
        step = trainer.global_step
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and step % self.every_n_steps == 0
            and step != self._last_step  # the first micro-batch only, under gradient accumulation
        )

    # --- a sampled step -------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self._names or not self._sampled(trainer):
            return
        self._flush(trainer)  # a sample still waiting for its optimizer step (should not happen)
        self._last_step = trainer.global_step
        self._start_sample(trainer.global_step)

    def _start_sample(self, step: int) -> None:
        """Open a sample of `step`: the hooks are in place until `_remove_hooks`."""
        self._sample = _Sample(step=step)
        # A compiled network (compile=true) runs eagerly on this step, hooks and all, and its
        # compiled graph serves the other steps. Compiled, the hooks would break the graph into
        # pieces, which dynamo compiles again for every layer shape up to its recompile limit.
        self._eager = torch.compiler.set_stance("force_eager")
        for module in self._weights:
            self._handles.append(module.register_forward_pre_hook(self._before_weight))
        for module in self._names:
            self._handles.append(module.register_forward_pre_hook(self._before_activation))
            self._handles.append(module.register_forward_hook(self._after_activation))

    def _before_weight(self, module: nn.Module, args: tuple) -> None:
        self._sample.last_weight = module

    @torch.no_grad()
    def _before_activation(self, module: nn.Module, args: tuple) -> None:
        sample = self._sample
        call = sample.calls[module] = sample.calls.get(module, 0) + 1
        name = self._names[module] + (f"@{call}" if call > 1 else "")  # a module called twice
        layer = _Layer(name=name, depth=len(sample.layers) + 1, weight=sample.last_weight)
        sample.layers.append(layer)
        sample.open[module] = layer
        x = args[0]
        values = x.detach().float()
        layer.values["pre_act_mean"], layer.values["pre_act_std"] = values.mean(), values.std()
        self._histogram(layer, "pre_act", values)
        if x.requires_grad:  # dLoss/d(pre-activation), when backward reaches it
            x.register_hook(partial(self._on_gradient, layer))

    @torch.no_grad()
    def _after_activation(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        layer = self._sample.open.pop(module)
        y = output.detach().float()
        # (torch.std_mean and var(dim=1) are several times slower on CPU than these)
        n = y.numel()
        std = y.std()
        layer.values["act_mean"], layer.values["act_std"] = y.mean(), std
        if isinstance(module, nn.Tanh):
            layer.values["saturated"] = (y.abs() > self.threshold).sum() / n
        elif isinstance(module, nn.Sigmoid):
            layer.values["saturated"] = ((y > self.threshold).sum() + (y < 1.0 - self.threshold).sum()) / n
        if y.dim() >= 2:
            if isinstance(module, RECTIFIERS):
                per_unit_max = y.amax(dim=[d for d in range(y.dim()) if d != 1])
                layer.values["dead"] = (per_unit_max <= 0).float().mean()
            if y.size(1) > 1:
                within = (y - y.mean(dim=1, keepdim=True)).square().mean()  # variance across units
                total = std.square() * ((n - 1) / n)  # variance of all elements
                layer.values["unit_diversity"] = torch.where(
                    total > 0, (within / total.clamp_min(1e-30)).sqrt(), torch.zeros_like(total)
                )
        self._histogram(layer, "act", y)

    @torch.no_grad()
    def _on_gradient(self, layer: _Layer, grad: Tensor) -> None:
        g = grad.detach().float()
        layer.values["grad_std"] = g.std()
        self._histogram(layer, "grad", g)

    def _histogram(self, layer: _Layer, what: str, values: Tensor, bins: int = 64) -> None:
        """W&B only: a histogram of at most HISTOGRAM_SAMPLE values, taken at a regular stride.

        A strided view costs a fifth of a random gather over a conv feature map (0.2 ms against
        0.9 ms for 64x32x28x28 values on CPU: the gather's reads scatter over a tensor larger
        than the cache). The stride is coprime with the number of values per example, so that
        the picks cycle through every unit and position instead of aliasing onto a few (a stride
        of H*W would read one pixel of every channel).
        """
        if not self._wandb:
            return
        flat = values.flatten()
        if flat.numel() > HISTOGRAM_SAMPLE:
            per_example = values[0].numel() if values.dim() > 1 else 1
            stride = math.ceil(flat.numel() / HISTOGRAM_SAMPLE)
            while math.gcd(stride, per_example) != 1:
                stride += 1
            flat = flat[::stride]
        layer.histograms[what] = histogram(flat, bins)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Inside optimizer.step(), after backward and before the update: the gradients are final
        # (unscaled under mixed precision, accumulated over micro-batches).
        sample = self._sample
        if sample is None or sample.weights_before is not None:
            return
        sample.weights_before = {}
        with torch.no_grad():
            for layer in sample.layers:
                weight = getattr(layer.weight, "weight", None)
                if weight is None:
                    continue
                if weight.grad is not None:
                    layer.values["weight_grad_norm"] = weight.grad.detach().float().norm()
                if layer.weight not in sample.weights_before:
                    sample.weights_before[layer.weight] = weight.detach().float().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._remove_hooks()
        sample = self._sample
        if sample is None or sample.weights_before is None:  # no optimizer step yet (accumulation)
            return
        with torch.no_grad():
            for layer in sample.layers:
                before = sample.weights_before.get(layer.weight)
                if before is None:
                    continue
                norm = before.norm()
                change = (layer.weight.weight.detach().float() - before).norm()
                # undefined for an all-zero weight (init=zeros): NaN, left out when logged
                layer.values["update_ratio"] = torch.where(norm > 0, change / norm.clamp_min(1e-30), math.nan)
        self._flush(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._remove_hooks()
        self._flush(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._eager is not None:  # back to the compiler's stance before the sampled step
            self._eager.__exit__(None, None, None)
            self._eager = None

    # --- recording ------------------------------------------------------------------------------
    def _flush(self, trainer: pl.Trainer) -> None:
        sample, self._sample = self._sample, None
        if sample is None or not sample.layers:
            return
        keys = [(layer, stat) for layer in sample.layers for stat in STATS if stat in layer.values]
        numbers = torch.stack([layer.values[stat].reshape(()) for layer, stat in keys]).tolist()  # one sync
        rows = [
            {"step": sample.step, "layer": layer.name, "depth": layer.depth, "stat": stat, "value": value}
            for (layer, stat), value in zip(keys, numbers, strict=True)
            if not (stat == "update_ratio" and math.isnan(value))
        ]
        self.rows.extend(rows)
        self._write_csv(Path(trainer.default_root_dir) / self.filename, rows)
        metrics = {f"layers/{r['stat']}/{self._key(sample.layers[r['depth'] - 1])}": r["value"] for r in rows}
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger) and not self.csv_logger:
                continue
            extra = self._wandb_histograms(sample) if isinstance(logger, WandbLogger) and self._wandb else {}
            logger.log_metrics({**metrics, **extra}, step=sample.step)

    @staticmethod
    def _key(layer: _Layer) -> str:
        """A metric-name-safe label that sorts by depth: L03_blocks_2."""
        return f"L{layer.depth:02d}_" + "".join(c if c.isalnum() else "_" for c in layer.name)

    def _wandb_histograms(self, sample: _Sample) -> dict:
        import wandb

        entries = [
            (f"layers_hist/{what}/{self._key(layer)}", counts, bounds)
            for layer in sample.layers
            for what, (counts, bounds) in layer.histograms.items()
        ]
        if not entries:
            return {}
        names, counts, bounds = zip(*entries, strict=True)
        # two read-backs for all of them (the histograms stay on the device until now)
        counts, bounds = torch.stack(counts).cpu(), torch.stack(bounds).tolist()
        histograms = {}
        for name, row, (low, high) in zip(names, counts, bounds, strict=True):
            if not row.any():  # no finite value
                continue
            if low == high:  # torch.histc's own range for a constant tensor
                low, high = low - 1.0, high + 1.0
            edges = torch.linspace(low, high, row.numel() + 1)
            histograms[name] = wandb.Histogram(np_histogram=(row.numpy(), edges.numpy()))
        return histograms

    @staticmethod
    def _write_csv(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.is_file() or path.stat().st_size == 0
        with path.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    # --- plots against depth --------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self._flush(trainer)
        # fast_dev_run (debug=fdr) is a smoke test of one batch: the CSV, but no plots of one step
        if not self.plots or not self.rows or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        # from the CSV: after a resume it also holds the first run's samples, step 0 included
        directory = Path(trainer.default_root_dir)
        with (directory / self.filename).open(newline="") as file:
            rows = [
                {
                    "step": int(r["step"]),
                    "depth": int(r["depth"]),
                    "stat": r["stat"],
                    "value": float(r["value"]),
                }
                for r in csv.DictReader(file)
            ]
        paths = self.plot(directory, rows)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                for stat, path in paths.items():
                    logger.log_image(key=f"layers_plot/{stat}", images=[str(path)])

    def plot(self, directory: Path, rows: list[dict] | None = None) -> dict[str, Path]:
        """`layer_stats_<stat>.png` for every statistic in `rows` (default: this fit's): value
        against depth at the first sampled step (step 0: init) and the last. Returns {stat: path}."""
        from matplotlib.figure import Figure  # no pyplot: no global backend, Agg renders
        from matplotlib.ticker import MaxNLocator

        rows = self.rows if rows is None else rows
        steps = sorted({r["step"] for r in rows})
        shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
        paths = {}
        for stat in STATS:
            curves = {
                step: sorted(
                    (r["depth"], r["value"]) for r in rows if r["stat"] == stat and r["step"] == step
                )
                for step in shown
            }
            curves = {step: points for step, points in curves.items() if points}
            if not curves:
                continue
            figure = Figure(figsize=(6, 4), dpi=100)  # fixed margins: a layout engine costs 30%
            figure.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)
            axes = figure.add_subplot()
            for step, points in curves.items():
                depths, values = zip(*points, strict=True)
                label = (
                    "init (step 0)"
                    if step == 0
                    else f"step {step}" + (" (last)" if step == shown[-1] else "")
                )
                axes.plot(depths, values, "o-", label=label, color="C0" if step == shown[0] else "C3")
            values = [v for points in curves.values() for _, v in points]
            # spreads (std, norms, ratios) vanish or explode over depth: log scale when they span
            # more than a decade
            positive = all(v > 0 and math.isfinite(v) for v in values)
            if stat.endswith(("std", "norm", "ratio")) and positive and max(values) > 10 * min(values):
                axes.set_yscale("log")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.set_xlabel("depth (activation layer)")
            axes.set_ylabel(stat)
            axes.set_title(f"{stat} against depth")
            axes.legend()
            paths[stat] = directory / f"layer_stats_{stat}.png"
            directory.mkdir(parents=True, exist_ok=True)
            figure.savefig(paths[stat])
        return paths
