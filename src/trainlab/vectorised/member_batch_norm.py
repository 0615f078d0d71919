"""torch BatchNorm of K stacked members as one batch norm over K x C channels, each member still
getting its own bits.

Batch norm normalises each channel over the batch (and the spatial positions) on its own, so the
K members' [B, C, ...] batches laid side by side as one [B, K*C, ...] batch, with the members'
weights, biases and running statistics concatenated into K*C channels, is the same computation
per channel. The price is two copies of the activations (into that layout and
back), against K small kernel calls per layer.

This holds for the batches of BatchNorm2d ([B, C, H, W]), where each channel is reduced over its
own contiguous planes; the backward of a [B, C] batch (BatchNorm1d) reduces a channel in an order
that depends on the number of channels, so BatchNorm1d runs member by member. The first time a
shape comes, the batched call runs on copies of the running statistics next to the per-member
calls, and its output and running statistics are compared with theirs bit for bit; the verdict
is kept for that shape (as member_linear's products are checked), and where they differ the layer
runs member by member. The backward is torch's batch-norm backward over the K*C channels
(autograd records the batched call): its bits against the members' own are tested
(tests/test_vectorised_member_batch_norm.py, test_vectorised_stacked.py), not checked at run
time (autograd cannot run inside vmap's rule).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

# (shape, strides, dtype, device, training, which tensors are given) -> batched gives the same bits
_verdicts: dict[tuple, bool] = {}


def member_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    per_member: Callable[[], Tensor],
) -> Tensor:
    """`F.batch_norm` of every member: x [K, B, C, ...] and the members' [K, C] tensors (each
    batched at dimension 0, or None) -> [K, B, C, ...]; `per_member()` runs the members one by one
    (on the same running statistics), the fallback and the reference of the check."""
    stats = [t for t in (running_mean, running_var) if t is not None]
    # [K, B, C, H, W] only: the backward of a [B, C] batch (BatchNorm1d) reduces each channel in
    # an order that depends on C; and the running statistics are updated in place, on views
    if x.dim() < 5 or any(not t.is_contiguous() for t in stats):
        return per_member()
    key = (
        x.shape,
        x.stride(),
        x.dtype,
        x.device,
        training,
        tuple(t is None for t in (running_mean, running_var, weight, bias)),
    )
    verdict = _verdicts.get(key)
    if verdict is None:
        verdict = _verdicts[key] = _same_bits(
            x, running_mean, running_var, weight, bias, training, momentum, eps
        )
    if not verdict:
        return per_member()
    return _batched(x, running_mean, running_var, weight, bias, training, momentum, eps)


def _same_bits(x, running_mean, running_var, weight, bias, training, momentum, eps) -> bool:
    """Whether the batched call gives each member its own call's output and running statistics,
    bit for bit, on copies of this call's tensors."""
    stats = [None if t is None else t.clone() for t in (running_mean, running_var, running_mean, running_var)]
    mean_a, var_a, mean_b, var_b = stats

    def member(t: Tensor | None, k: int) -> Tensor | None:
        return None if t is None else t[k]

    with torch.no_grad():
        alone = torch.stack(
            [
                nn.functional.batch_norm(
                    x[k], member(mean_a, k), member(var_a, k), member(weight, k), member(bias, k),
                    training, momentum, eps,
                )
                for k in range(x.shape[0])
            ]
        )  # fmt: skip
        together = _batched(x, mean_b, var_b, weight, bias, training, momentum, eps)
    pairs = [(alone, together), *((a, b) for a, b in ((mean_a, mean_b), (var_a, var_b)) if a is not None)]
    return all(torch.equal(a, b) for a, b in pairs)


def _batched(x, running_mean, running_var, weight, bias, training, momentum, eps) -> Tensor:
    members, batch, channels = x.shape[:3]
    spread = x.movedim(0, 1).reshape(batch, members * channels, *x.shape[3:])  # [B, K*C, ...]

    def flat(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.reshape(members * channels)  # a view: updated in place

    out = nn.functional.batch_norm(
        spread, flat(running_mean), flat(running_var), flat(weight), flat(bias), training, momentum, eps
    )
    # back in the members' own layout: an elementwise function after it (GELU's erf) rounds
    # differently on a strided input than on a member's contiguous one
    return out.reshape(batch, members, channels, *x.shape[3:]).movedim(1, 0).contiguous()
