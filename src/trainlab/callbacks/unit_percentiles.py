"""The input distribution of one unit over training (Ioffe & Szegedy 2015, Fig. 1b and 1c).

The paper tracks one sigmoid of the last hidden layer of an MNIST MLP and plots the 15th,
50th and 85th percentiles of its input against training steps: without BatchNorm they drift
(internal covariate shift); with it they stay put. This callback records the same curves for
any network: the input of the last activation module of the configured type, one unit (a
feature of a vector, or a channel of a feature map, all positions pooled).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import get_class
from torch import nn


class UnitInputPercentiles(pl.Callback):
    """Log percentiles of one unit's pre-activation on every training batch, and plot them.

    Args:
        activation: the activation's class (`_target_` of the `activation` config); the last
            module of this type in the model is the last hidden layer's activation.
        unit: which unit (feature or channel) of that layer.
        percentiles: the percentiles to track, in [0, 100].
        filename: the PNG written in the run directory (trainer.default_root_dir) after fit.

    Metrics: `train/unit{unit}_input_p{q}` per step, to every logger (W&B plots them over
    steps); the PNG also goes to W&B when a WandbLogger is attached.
    """

    def __init__(
        self,
        activation: str = "torch.nn.Sigmoid",
        unit: int = 0,
        percentiles: list[float] | tuple[float, ...] = (15.0, 50.0, 85.0),
        filename: str = "unit_input_percentiles.png",
    ) -> None:
        if unit < 0:
            raise ValueError(f"unit={unit} must be a non-negative unit index.")
        if not percentiles or any(not 0.0 <= q <= 100.0 for q in percentiles):
            raise ValueError(
                f"percentiles={list(percentiles)} must be a non-empty list of values in [0, 100]."
            )
        self.activation, self.unit = activation, unit
        self.percentiles = [float(q) for q in percentiles]
        self.filename = filename
        self.steps: list[int] = []
        self.values: list[list[float]] = []  # one row per step, one column per percentile
        self._recording = False
        self._latest: list[float] | None = None
        self._handle = None

    # --- where to listen ------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self._handle is not None:
            return
        activation_class = get_class(self.activation)
        matches = [m for m in pl_module.modules() if isinstance(m, activation_class)]
        if not matches:
            raise ValueError(
                f"UnitInputPercentiles: the model has no {self.activation} module; set the callback's "
                "`activation` to the class of the activation the network uses (e.g. ${activation._target_})."
            )
        self._handle = matches[-1].register_forward_pre_hook(self._record)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @torch.no_grad()
    def _record(self, module: nn.Module, args: tuple) -> None:
        if not self._recording:  # validation, test and other forward passes are not training
            return
        x = args[0].detach()
        if self.unit >= x.size(1):
            raise ValueError(
                f"UnitInputPercentiles: unit={self.unit}, but the layer has {x.size(1)} units (0..{x.size(1) - 1})."
            )
        values = x[:, self.unit].reshape(-1).float()
        quantiles = torch.tensor(self.percentiles, device=values.device) / 100.0
        self._latest = torch.quantile(values, quantiles).tolist()

    # --- when to listen -------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._recording, self._latest = True, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._recording = False
        if self._latest is None:
            return
        self.steps.append(trainer.global_step)
        self.values.append(self._latest)
        for q, value in zip(self.percentiles, self._latest, strict=True):
            pl_module.log(f"train/unit{self.unit}_input_p{q:g}", value, on_step=True, on_epoch=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.steps:
            return
        path = Path(trainer.default_root_dir) / self.filename
        self.plot(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger: the figure next to the run's curves
                logger.log_image(key="train/unit_input_percentiles", images=[str(path)])

    def plot(self, path: Path) -> Path:
        # Figure without pyplot: no global backend to set, Agg renders the PNG.
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6, 4), dpi=120, layout="constrained")
        axes = figure.add_subplot()
        columns = list(zip(*self.values, strict=True))
        for q, column in zip(self.percentiles, columns, strict=True):
            # as in the paper's figure: the median solid, the other percentiles dashed around it
            median = q == 50.0
            axes.plot(
                self.steps,
                column,
                "-" if median else "--",
                color="C1" if median else "C0",
                label=f"{q:g}th percentile",
            )
        axes.set_xlabel("training step")
        axes.set_ylabel(f"input of unit {self.unit}")
        axes.set_title(f"Input of one {self.activation.rsplit('.', 1)[-1]} unit of the last hidden layer")
        axes.legend()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        return path
