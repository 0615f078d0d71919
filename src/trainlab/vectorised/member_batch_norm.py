"""torch BatchNorm of K stacked members as one batch norm over K x C channels, each member still
getting its own bits.

Batch norm normalises each channel over the batch (and the spatial positions) on its own, so the
K members' [B, C, ...] batches laid side by side as one [B, K*C, ...] batch, with the members'
weights, biases and running statistics concatenated into K*C channels, is the same computation
per channel. The price is copies of the activations into that layout and back (two in the
forward, three in the backward), against K small kernel calls per layer.

A member network's BatchNorm runs `F.batch_norm`, i.e. torch's `native_batch_norm` forward and
`native_batch_norm_backward` backward. `member_batch_norm` runs the same two kernels once over the
K x C channels where that gives each member the bits of its own calls, and once per member where
it does not. On the CPU the batched call matches for the batches of BatchNorm2d that were tried,
but not for every [B, C] batch of BatchNorm1d (its backward reduces a channel in an order that
depends on C). So, as member_linear's products are, the forward (output, running statistics and
saved batch statistics) and the backward (input, weight and bias gradients) are each checked the
first time they meet a shape (trainlab.vectorised.same_bits): the batched result is compared bit
for bit with the per-member calls on that step's own tensors (on copies of the running
statistics), and the verdict is kept for that shape. In fast mode (the GPU default) the batched
call runs without checks: vmap's own rule for batch norm applies the affine part separately
(another rounding) and fails under autocast. The output is returned in the members' own layout:
an elementwise function after it (GELU's erf) rounds differently on a strided input than on a
member's contiguous one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainlab.vectorised.same_bits import checked, layout


def member_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    exact: bool = True,
) -> Tensor:
    """`F.batch_norm` of every member: x [K, B, C, ...], the members' [K, C] tensors (or None);
    the running statistics are updated in place. -> [K, B, C, ...]. `exact`: checked per shape
    (each member's own bits); else always batched."""
    out, _, _, new_mean, new_var = _member_batch_norm(
        x, running_mean, running_var, weight, bias, training, momentum, eps, exact
    )
    # the op is functional (autograd needs it so): it returns the updated statistics
    for stats, new in ((running_mean, new_mean), (running_var, new_var)):
        if stats is not None and training:
            stats.copy_(new)
    return out


@torch.library.custom_op("trainlab::member_batch_norm", mutates_args=())
def _member_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    exact: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(output, saved mean [K, C], saved inverse std [K, C] (both [K, 0] in eval mode), the
    updated running mean and variance ([0] where there are none))."""
    key = _key("forward", x, training, running_mean, weight, bias)
    options = (training, momentum, eps)

    def run(batched: bool) -> tuple[Tensor, ...]:
        stats = [x.new_empty(0) if t is None else t.clone() for t in (running_mean, running_var)]
        given = [None if t is None else s for t, s in zip((running_mean, running_var), stats, strict=True)]
        return (*_forward(x, weight, bias, *given, *options, batched=batched), *stats)

    return checked(key, lambda: run(batched=True), lambda: run(batched=False), exact)


@_member_batch_norm.register_fake
def _(x, running_mean, running_var, weight, bias, training, momentum, eps, exact):
    saved = x.new_empty(x.shape[0], x.shape[2] if training else 0)
    stats = [x.new_empty(0) if t is None else torch.empty_like(t) for t in (running_mean, running_var)]
    return torch.empty_like(x), saved, saved.clone(), *stats


def _forward(x, weight, bias, running_mean, running_var, training, momentum, eps, batched: bool):
    members = x.shape[0]
    if batched:
        out, saved_mean, saved_invstd = torch.ops.aten.native_batch_norm(
            _spread(x),
            *(_flat(t) for t in (weight, bias, running_mean, running_var)),
            training,
            momentum,
            eps,
        )
        return _gather(out, members), saved_mean.reshape(members, -1), saved_invstd.reshape(members, -1)
    results = [
        torch.ops.aten.native_batch_norm(
            x[k], *(_member(t, k) for t in (weight, bias, running_mean, running_var)), training, momentum, eps
        )
        for k in range(members)
    ]
    return tuple(torch.stack(parts).contiguous() for parts in zip(*results, strict=True))


def _setup_context(ctx, inputs, output) -> None:
    x, running_mean, running_var, weight, bias, training, _momentum, eps, exact = inputs
    _, saved_mean, saved_invstd, new_mean, new_var = output
    # the backward reads the running statistics as autograd's does: updated by the forward
    stats = [None if t is None else new for t, new in ((running_mean, new_mean), (running_var, new_var))]
    ctx.save_for_backward(x, weight, *stats, saved_mean, saved_invstd)
    ctx.training, ctx.eps, ctx.exact = training, eps, exact
    ctx.mask = [
        ctx.needs_input_grad[0],
        weight is not None and ctx.needs_input_grad[3],
        bias is not None and ctx.needs_input_grad[4],
    ]
    ctx.mark_non_differentiable(saved_mean, saved_invstd, new_mean, new_var)


def _backward(ctx, grad: Tensor, *_non_differentiable):
    x, weight, running_mean, running_var, saved_mean, saved_invstd = ctx.saved_tensors
    arguments = (grad.contiguous(), x, weight, running_mean, running_var, saved_mean, saved_invstd)
    options = (ctx.training, ctx.eps, ctx.mask)
    key = _key("backward", x, ctx.training, running_mean, weight, *ctx.mask)
    grad_x, grad_weight, grad_bias = checked(
        key,
        lambda: _backward_pass(*arguments, *options, batched=True),
        lambda: _backward_pass(*arguments, *options, batched=False),
        ctx.exact,
    )
    return grad_x, None, None, grad_weight, grad_bias, None, None, None, None


def _backward_pass(
    grad, x, weight, running_mean, running_var, saved_mean, saved_invstd, training, eps, mask, batched
):
    members = x.shape[0]
    if batched:
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            _spread(grad), _spread(x), *(_flat(t) for t in (weight, running_mean, running_var)),
            _flat(saved_mean), _flat(saved_invstd), training, eps, mask,
        )  # fmt: skip
        return (
            None if grad_x is None else _gather(grad_x, members),
            *(None if t is None else t.reshape(members, -1) for t in (grad_weight, grad_bias)),
        )
    results = [
        torch.ops.aten.native_batch_norm_backward(
            grad[k], x[k], *(_member(t, k) for t in (weight, running_mean, running_var)),
            _member(saved_mean, k), _member(saved_invstd, k), training, eps, mask,
        )
        for k in range(members)
    ]  # fmt: skip
    return tuple(None if parts[0] is None else torch.stack(parts) for parts in zip(*results, strict=True))


_member_batch_norm.register_autograd(_backward, setup_context=_setup_context)


def _key(stage: str, x: Tensor, training: bool, *given: object) -> tuple:
    """What a verdict holds for: x's layout, the options, which tensors are None, the masks."""
    flags = tuple(g if isinstance(g, bool) else g is None for g in given)
    return ("batch_norm", stage, *layout(x), training, flags)


def _spread(t: Tensor) -> Tensor:
    """[K, B, C, ...] -> [B, K*C, ...]: the members' channels side by side (a copy)."""
    return t.movedim(0, 1).reshape(t.shape[1], t.shape[0] * t.shape[2], *t.shape[3:])


def _gather(t: Tensor, members: int) -> Tensor:
    """[B, K*C, ...] -> [K, B, C, ...], contiguous in the members' own layout."""
    return t.reshape(t.shape[0], members, -1, *t.shape[2:]).movedim(1, 0).contiguous()


def _flat(t: Tensor | None) -> Tensor | None:
    """[K, C] -> [K*C] (a view: running statistics are updated in place); [K, 0] -> [0]."""
    return None if t is None else t.reshape(-1)


def _member(t: Tensor | None, k: int) -> Tensor | None:
    return None if t is None else t[k]
