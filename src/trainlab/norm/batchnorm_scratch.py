"""Batch normalisation written from the algorithm of Ioffe & Szegedy (2015), Alg. 1 and 2.

For each channel c, over the m values of a mini-batch B (all examples, and every spatial
position of a feature map, Sec. 3.2):

    mu_B      = 1/m * sum_i x_i                      mini-batch mean
    sigma2_B  = 1/m * sum_i (x_i - mu_B)^2           mini-batch variance (biased)
    x_hat_i   = (x_i - mu_B) / sqrt(sigma2_B + eps)
    y_i       = gamma * x_hat_i + beta               gamma initialised to 1, beta to 0

Inference (Alg. 2) replaces mu_B and sigma2_B by population estimates. Like torch, these are
running averages with `momentum`, and the running variance uses the unbiased m/(m-1) * sigma2_B:

    running_mean <- (1 - momentum) * running_mean + momentum * mu_B
    running_var  <- (1 - momentum) * running_var  + momentum * m/(m-1) * sigma2_B

The backward pass is autograd's: every step above is a differentiable tensor operation, so
dx, dgamma and dbeta follow from the chain rule through the mean and variance (the paper's
Sec. 3 gradients); the tests check them against torch's fused kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BatchNormScratch(nn.Module):
    """BatchNorm over (N, C) vectors or (N, C, H, W) maps (any (N, C, *) input): statistics of
    each channel over every dimension except the channel one.

    Training mode normalises with the mini-batch statistics (and updates the running ones);
    eval mode uses the running averages, so one example's output does not depend on the rest
    of its batch. With `track_running_stats=False` there are no running averages and the batch
    statistics are used in both modes, as in torch. Parameter and buffer names match torch's
    BatchNorm, so state dicts load into either.
    """

    # trainlab.layers.traits: it subtracts each channel's batch mean, so a bias before it cancels
    removes_channel_mean = True
    # ... and in training normalises with the batch's statistics (one value per channel: no variance)
    normalises_over_batch = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"norm.momentum={momentum} must be in [0, 1].")
        if eps <= 0.0:
            raise ValueError(f"norm.eps={eps} must be positive (it keeps 1/sqrt(var + eps) finite).")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))  # gamma
            self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    # --- the algorithm ----------------------------------------------------------------------
    def uses_batch_stats(self) -> bool:
        return self.training or self.running_mean is None

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x, dtype = full_precision(x)
        if not self.uses_batch_stats():
            return self.normalise(x, self.running_mean, self.running_var).to(dtype)
        reduce_dims = [0, *range(2, x.dim())]
        mean, var = batch_moments(x, reduce_dims)
        if self.training and self.track_running_stats:
            self.update_running_stats(mean, var, count=x.numel() // x.size(1))
        return self.normalise(x, mean, var).to(dtype)

    def normalise(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """x_hat = (x - mean) / sqrt(var + eps), then gamma * x_hat + beta.

        `mean` and `var` are (C,), one statistic per channel, or (N, C), one per example and
        channel (ghost batches); either is broadcast over x's spatial dimensions.
        """
        trailing = (1,) * (x.dim() - 2)  # the spatial dimensions after the channel one
        mean = _with_trailing(mean, x, trailing)
        var = _with_trailing(var, x, trailing)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        if not self.affine:
            return x_hat
        return x_hat * self.weight.view(-1, *trailing) + self.bias.view(-1, *trailing)

    @torch.no_grad()
    def update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        """One momentum step; the stored variance is unbiased (m/(m-1)), as in Alg. 2."""
        unbiased = var * (count / (count - 1))
        self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        self.num_batches_tracked.add_(1)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() < 2 or x.size(1) != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expects input of shape (N, {self.num_features}, ...), "
                f"got {tuple(x.shape)}."
            )
        if self.uses_batch_stats() and x.numel() // x.size(1) < 2:
            raise ValueError(
                f"{type(self).__name__} needs more than one value per channel to compute batch statistics, "
                f"got input of shape {tuple(x.shape)}: use a batch of 2 or more."
            )


def full_precision(x: Tensor) -> tuple[Tensor, torch.dtype]:
    """Half-precision input (mixed-precision training) is normalised in float32, as torch's
    BatchNorm does under autocast: a bf16 variance has 3 significant digits."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float(), x.dtype
    return x, x.dtype


def batch_moments(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance (1/m) over `dims`: the mini-batch statistics of Alg. 1."""
    mean = x.mean(dims)
    var = x.var(dims, correction=0)
    return mean, var


def _with_trailing(stat: Tensor, x: Tensor, trailing: tuple[int, ...]) -> Tensor:
    """(C,) or (N, C) statistics -> (C, 1, 1) or (N, C, 1, 1): broadcast over the spatial dimensions."""
    return stat.to(x.dtype).view(*stat.shape, *trailing)
