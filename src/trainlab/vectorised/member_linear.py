"""The Linear layers of K stacked members as batched GEMMs, each member still getting its own bits.

A member network's Linear layer on a batch [B, in] runs `F.linear` (`addmm`) forward and autograd's
`AddmmBackward` backward: three GEMMs per step (output, input gradient `g @ W`, weight gradient
`g.T @ x`) and a bias-gradient sum. Over K members each is one batched kernel (`baddbmm`, `bmm`,
a sum over the batch dimension). On the CPU these give the very bits of the K separate calls for
most shapes (the same GEMM kernel per member), but not for all: e.g. the weight gradient of a
10-unit head differs in the last bit. So in exact mode each of the four products is checked the
first time it meets a set of shapes (trainlab.vectorised.same_bits): the batched result is
compared with the per-member calls on the step's own tensors and the verdict kept for those
shapes; a product that does not match runs member by member from then on, one that matches runs
batched. The first step of each shape runs both and returns the per-member bits.

Autograd records `member_linear` itself (a custom op with its own backward), so the weight
gradient comes out in the weight's own layout ([K, out, in]). Autograd's rule for a `baddbmm` with
the transposed weight returns it transposed and copies it into `.grad`: a third of a step of the
digits MLP.

In fast mode (the GPU default) every product runs batched without checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from trainlab.vectorised.same_bits import checked, layout


@torch.library.custom_op("trainlab::member_linear", mutates_args=())
def member_linear(x: Tensor, weight: Tensor, bias: Tensor | None, exact: bool) -> Tensor:
    """`F.linear` of every member at once: x [K, ..., in], weight [K, out, in], bias [K, out] or
    None -> [K, ..., out]. `exact`: each member's own bits (see the module docstring)."""
    rows = x.reshape(x.shape[0], -1, x.shape[-1])

    def batched() -> Tensor:
        if bias is None:
            return torch.bmm(rows, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2))

    def per_member() -> Tensor:
        outputs = [
            nn.functional.linear(x[k], weight[k], None if bias is None else bias[k])
            for k in range(x.shape[0])
        ]
        return torch.stack(outputs).reshape(rows.shape[0], rows.shape[1], weight.shape[1])

    out = _product("forward", (rows, weight, bias), batched, per_member, exact)
    return out.reshape(*x.shape[:-1], weight.shape[1])


@member_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, exact: bool) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[1])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, exact = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.exact = bias is not None, exact
    ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)


def _backward(ctx, grad: Tensor):
    x_dtype, weight_dtype, bias_dtype = ctx.dtypes
    # under autocast the forward ran in the output's dtype (bf16): so does the backward, and each
    # gradient returns in its input's dtype, as autograd's casts around an autocast F.linear do
    x, weight = (t.to(grad.dtype) for t in ctx.saved_tensors)
    members = x.shape[0]
    rows = x.reshape(members, -1, x.shape[-1])
    grads = grad.reshape(members, -1, grad.shape[-1])
    needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]

    def per_member(product: Callable[[int], Tensor]) -> Callable[[], Tensor]:
        return lambda: torch.stack([product(k) for k in range(members)])

    # per member, what autograd's AddmmBackward computes for F.linear (torch/csrc/autograd/
    # FunctionsManual.cpp: mm_mat1_backward, mm_mat2_backward for the transposed weight, sum_to)
    grad_x = grad_weight = grad_bias = None
    if needs_x:
        grad_x = _product(
            "grad_input",
            (grads, weight),
            lambda: torch.bmm(grads, weight),
            per_member(lambda k: grads[k].mm(weight[k])),
            ctx.exact,
        ).reshape(x.shape)
    if needs_weight:
        grad_weight = _product(
            "grad_weight",
            (grads, rows),
            lambda: torch.bmm(grads.transpose(1, 2), rows),
            per_member(lambda k: grads[k].t().mm(rows[k])),
            ctx.exact,
        )
    if needs_bias and ctx.has_bias:
        grad_bias = _product(
            "grad_bias", (grads,), lambda: grads.sum(1), per_member(lambda k: grads[k].sum(0)), ctx.exact
        )
    return (
        None if grad_x is None else grad_x.to(x_dtype),
        None if grad_weight is None else grad_weight.to(weight_dtype),
        None if grad_bias is None else grad_bias.to(bias_dtype),
        None,
    )


# autograd records member_linear itself: the weight gradient comes out in the weight's layout
member_linear.register_autograd(_backward, setup_context=_setup_context)


def _product(
    name: str,
    operands: tuple[Tensor | None, ...],
    batched: Callable[[], Tensor],
    per_member: Callable[[], Tensor],
    exact: bool,
) -> Tensor:
    """The batched product where it gives the per-member bits (always, if not `exact`)."""
    return checked(("linear", name, *layout(*operands)), batched, per_member, exact)
