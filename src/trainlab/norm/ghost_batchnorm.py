"""Ghost batch normalisation (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better", Alg. 1).

A large batch of N examples is split into N / v "virtual" (ghost) batches of v examples, and
each is normalised with its own statistics, as if it had been a small batch:

    x = [B_1, ..., B_G],  G = N / v
    y_i = gamma * (x_i - mu_{B_g}) / sqrt(sigma2_{B_g} + eps) + beta     for x_i in B_g

Small-batch statistics are noisier, and that noise is the regulariser that large-batch
training lacks. The running averages are updated once per ghost batch, in order, so a batch
of G ghosts moves them as G ordinary BN steps would; with v = N it is BatchNorm exactly.
Inference uses the running averages, as BatchNorm does.
"""

from __future__ import annotations

from torch import Tensor

from trainlab.norm.batchnorm_scratch import BatchNormScratch, batch_moments, full_precision
from trainlab.utils.config import ConfigError

DIVIDE_EVERY_BATCH = (
    "ghost batch norm splits every training batch into whole virtual batches. Choose a virtual_batch_size "
    "that divides data.batch_size and also the last, smaller batch of an epoch (the number of training "
    "examples modulo data.batch_size), set data.train_size to a multiple of data.batch_size, or drop "
    "the last batch with data.drop_last=true."
)


def check_virtual_batches(
    virtual_batch_size: int, train_examples: int, batch_size: int, drop_last: bool
) -> None:
    """Before training: every training batch of an epoch (the last, smaller one too, unless dropped)
    must split into whole virtual batches, or the forward pass fails at the end of the first epoch."""
    sizes = {min(batch_size, train_examples)}
    last = train_examples % batch_size
    if last and not drop_last and train_examples > batch_size:
        sizes.add(last)
    if drop_last and train_examples < batch_size:
        sizes = set()  # no batch at all: Lightning says so itself
    bad = sorted(size for size in sizes if size % virtual_batch_size)
    if bad:
        raise ConfigError(
            f"norm.virtual_batch_size={virtual_batch_size} does not divide the training batches of "
            f"{', '.join(map(str, bad))} examples ({train_examples} training examples in batches of "
            f"data.batch_size={batch_size}, data.drop_last={str(drop_last).lower()}): {DIVIDE_EVERY_BATCH}"
        )


class GhostBatchNorm(BatchNormScratch):
    """BatchNorm whose training statistics come from virtual batches of `virtual_batch_size`.

    Ghost batches apply in training mode only; in eval mode the running averages are used, or,
    with `track_running_stats=False`, the statistics of the whole batch.
    """

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        if virtual_batch_size < 1:
            raise ValueError(f"norm.virtual_batch_size={virtual_batch_size} must be a positive integer.")
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        batch, size = x.size(0), self.virtual_batch_size
        if batch % size:
            raise ValueError(
                f"norm.virtual_batch_size={size} does not divide this batch of {batch} examples: "
                f"{DIVIDE_EVERY_BATCH}"
            )
        per_channel = size * (x.numel() // (batch * x.size(1)))  # values per channel in one ghost batch
        if per_channel < 2:
            raise ValueError(
                f"norm.virtual_batch_size={size} leaves one value per channel in each virtual batch, so its "
                "variance is undefined: use a virtual_batch_size of 2 or more."
            )
        x, dtype = full_precision(x)
        ghosts = x.reshape(batch // size, size, *x.shape[1:])  # (G, v, C, *spatial)
        mean, var = batch_moments(ghosts, [1, *range(3, ghosts.dim())])  # (G, C) each
        if self.track_running_stats:
            for ghost_mean, ghost_var in zip(mean, var, strict=True):
                self.update_running_stats(ghost_mean, ghost_var, per_channel)
        # every example is normalised with the statistics of its own ghost batch: (G, C) -> (N, C)
        return self.normalise(x, mean.repeat_interleave(size, 0), var.repeat_interleave(size, 0)).to(dtype)
