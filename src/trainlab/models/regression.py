"""Least squares with input noise or an L2 penalty: training with noise is Tikhonov regularisation
(Bishop 1995, "Training with noise is equivalent to Tikhonov regularization").

For a linear model y = W x + b, the squared error summed over outputs, and noise e ~ N(0, s^2 I)
added to every input, the expected loss over the noise is

    E_e ||W (x + e) + b - t||^2 = ||W x + b - t||^2 + s^2 ||W||_F^2

(the cross term has mean 0 and E[e e^T] = s^2 I): training on noisy inputs minimises, on average,
the clean loss plus an L2 penalty s^2 ||W||^2 on the weights (not on the bias). Both objectives have
the same minimiser, the ridge solution, which for a linear model has a closed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from trainlab.layers.weights import weight_layers
from trainlab.models.study_module import StudyModule
from trainlab.utils.config import ConfigError

Regulariser = Literal["noise", "l2", "weight_decay"]
REGULARISERS = ("noise", "l2", "weight_decay")


def ridge_solution(inputs: Tensor, targets: Tensor, penalty: float) -> tuple[Tensor, Tensor]:
    """(W, b) minimising mean_n ||W x_n + b - t_n||^2 + penalty * ||W||_F^2 (b not penalised).

    With centred data X, T (N rows): W^T = (X^T X / N + penalty I)^-1 X^T T / N and
    b = mean(t) - W mean(x). Computed in float64.
    """
    x, t = inputs.double().flatten(1), targets.double()
    x_mean, t_mean = x.mean(0), t.mean(0)
    xc, tc = x - x_mean, t - t_mean
    n, features = x.shape
    gram = xc.T @ xc / n + penalty * torch.eye(features, dtype=x.dtype)
    weight = torch.linalg.lstsq(gram, xc.T @ tc / n).solution.T
    return weight, t_mean - weight @ x_mean


class NoisyRegression(StudyModule):
    """Regress one-hot class targets with the squared error, regularised by input noise or L2.

    Args:
        network, optimizer, scheduler: as for trainlab.models.study_module.StudyModule (which
            also applies the transfer policy's groups: transfer.backbone_lr_mult, frozen stages).
        sigma: the noise's standard deviation s (in the units of the network's input, i.e. after
            the source's normalisation), and the penalty's scale s^2.
        regulariser: `noise`: train on x + N(0, s^2) (fresh noise every step); `l2`: train on x with
            the loss + s^2 * (sum of the squared weights of every weight layer, biases excluded);
            `weight_decay`: train on x, the optimizer's weight decay 2 s^2 on those weights (the
            gradient of s^2 ||W||^2 is 2 s^2 W; torch's weight_decay=lambda adds lambda W), 0 on
            biases. With SGD or Adam (L2 added to the gradient) it has the same minimiser as `l2`;
            AdamW's decoupled decay does not.

    The training loss is mean over examples of the squared error summed over the K outputs (no
    division by K, so that the penalty is s^2 ||W||^2 as in the formula above); validation and test
    see clean inputs. Logged: {train,val,test}/mse, {val,test}/acc (the argmax class),
    train/loss (the objective being minimised), weights/norm (||W||_F of all weight layers),
    val/objective (clean mse + s^2 ||W||^2: the objective both regularisers minimise in
    expectation). For a linear network (model=mlp model.depth=0) also weights/ridge_norm, the norm
    of the closed-form minimiser on the training set, and weights/distance_to_ridge,
    ||W - W*|| / ||W*||.
    """

    # What this module logs, i.e. what a callback's `monitor` may name (checked before training).
    LOGGED_METRICS = (
        "train/loss",
        "train/loss_step",
        "train/loss_epoch",
        "train/mse",
        "val/mse",
        "val/loss",
        "val/acc",
        "val/objective",
        "test/mse",
        "test/loss",
        "test/acc",
        "weights/norm",
        "weights/ridge_norm",
        "weights/distance_to_ridge",
    )

    def __init__(
        self,
        network: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        sigma: float = 0.0,
        regulariser: Regulariser = "noise",
    ) -> None:
        if regulariser not in REGULARISERS:
            raise ConfigError(f"module.regulariser={regulariser!r} is not one of {list(REGULARISERS)}.")
        if sigma < 0:
            raise ConfigError(f"module.sigma={sigma} must be >= 0.")
        super().__init__(network, optimizer, scheduler, sigma=float(sigma), regulariser=regulariser)
        # the weights regularised by `weight_decay` (not the biases)
        self._weight_names = {f"net.{name}.weight" for name, _ in weight_layers(self.net)}
        self.num_classes = int(self.hparams.network["num_classes"])
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.ridge: tuple[Tensor, Tensor] | None = None

    def squared_weights(self) -> Tensor:
        return sum(layer.weight.square().sum() for _, layer in weight_layers(self.net))

    def _mse(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self(x)
        targets = F.one_hot(labels, self.num_classes).to(outputs.dtype)
        return (outputs - targets).square().sum(1).mean(), outputs

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, labels = batch
        sigma = self.hparams.sigma
        if self.hparams.regulariser == "noise" and sigma > 0:
            x = x + sigma * torch.randn_like(x)
        mse, _ = self._mse(x, labels)
        loss = mse + sigma**2 * self.squared_weights() if self.hparams.regulariser == "l2" else mse
        self.log("train/mse", mse, on_step=False, on_epoch=True)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, labels = batch
        mse, outputs = self._mse(x, labels)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy(outputs, labels)
        self.log(f"{stage}/mse", mse, prog_bar=True)
        self.log(f"{stage}/loss", mse)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        squared = self.squared_weights().detach()
        self.log("weights/norm", squared.sqrt())
        mse = self.trainer.callback_metrics.get("val/mse")
        if mse is not None:
            self.log("val/objective", mse + self.hparams.sigma**2 * squared)
        if self.ridge is not None:
            layer = weight_layers(self.net)[0][1]
            ridge_weight = self.ridge[0].to(layer.weight)
            self.log("weights/ridge_norm", ridge_weight.norm())
            self.log("weights/distance_to_ridge", (layer.weight - ridge_weight).norm() / ridge_weight.norm())

    def on_fit_start(self) -> None:
        """The closed-form minimiser on the training set, when the network is one linear layer."""
        layers = weight_layers(self.net)
        datamodule = self.trainer.datamodule
        if len(layers) != 1 or not isinstance(layers[0][1], nn.Linear) or datamodule is None:
            return
        inputs, labels = zip(*datamodule.dataset("train"), strict=True)
        x = datamodule.network_input(torch.stack([torch.as_tensor(i) for i in inputs]))
        t = F.one_hot(torch.as_tensor(labels), self.num_classes)
        self.ridge = ridge_solution(x, t, self.hparams.sigma**2)

    def parameter_options(self, name: str, param: nn.Parameter) -> dict:
        """regulariser=weight_decay: a decay of 2 s^2 on the weights of weight layers, 0 elsewhere."""
        if self.hparams.regulariser != "weight_decay":
            return {}
        return {"weight_decay": 2.0 * self.hparams.sigma**2 if name in self._weight_names else 0.0}
