"""Learning-rate schedules stepped every optimizer step, sized by the run's total steps.

Each takes the optimizer and `total_steps` (Lightning's estimate for the whole fit), so the
same config works whether a run is bounded by max_epochs or max_steps.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from trainlab.utils.config import ConfigError

RUN_LENGTH = (
    "the run's length: trainer.max_epochs, or trainer.max_steps, with data.train_size and data.batch_size"
)


def cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LRScheduler:
    """Linear warm-up, then cosine decay from the base rate to `min_lr_ratio` times it.

    Called when the optimizer is built, before the first step: a warm-up as long as the run
    would end it at a rate that never reached the configured one, so it is an error.
    """
    if warmup_steps < 0:
        raise ConfigError(f"scheduler.warmup_steps={warmup_steps} must be >= 0 (0: no warm-up).")
    if warmup_steps and warmup_steps >= total_steps:
        raise ConfigError(
            f"scheduler.warmup_steps={warmup_steps} is not shorter than this run's {total_steps} optimizer "
            f"steps: the learning rate would still be warming up when training ends. Use fewer warm-up "
            f"steps (e.g. scheduler.warmup_steps={max(1, total_steps // 10)}, a tenth of the run), or "
            f"lengthen {RUN_LENGTH}."
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(
            f"scheduler.min_lr_ratio={min_lr_ratio} must be in [0, 1] (a fraction of optimizer.lr)."
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def step(
    optimizer: Optimizer,
    total_steps: int,
    milestones: tuple[float, ...] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LRScheduler:
    """Multiply the rate by `gamma` at each milestone, given as a fraction of the run."""
    if any(not 0.0 < m < 1.0 for m in milestones):
        raise ConfigError(f"scheduler.milestones are fractions of the run in (0, 1), got {list(milestones)}.")
    if gamma <= 0:
        raise ConfigError(f"scheduler.gamma={gamma} must be > 0 (the factor applied at each milestone).")
    boundaries = sorted(int(m * total_steps) for m in milestones)
    return LambdaLR(optimizer, lambda s: gamma ** sum(s >= b for b in boundaries))
