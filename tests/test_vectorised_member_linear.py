"""member_linear: K members' Linear layers as batched GEMMs with each member's own bits (exact
mode), checked per shape against the per-member calls; fast mode to a rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.vectorised import member_linear as ml

K = 5
# (batch, in, out): hidden layers of the digits MLP, a 10-unit head (whose batched weight gradient
# is not the per-member bits on some CPUs), odd sizes, a batch of one
SHAPES = [(64, 64, 256), (64, 256, 10), (37, 256, 10), (7, 5, 3), (1, 16, 4)]


def _members(batch: int, inputs: int, outputs: int, bias: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(K, batch, inputs, generator=generator)
    weight = torch.randn(K, outputs, inputs, generator=generator) / inputs**0.5
    b = torch.randn(K, outputs, generator=generator) if bias else None
    grad = torch.randn(K, batch, outputs, generator=generator)
    return x, weight, b, grad


def _alone(x, weight, bias, grad):
    """Each member's F.linear and its autograd gradients, one member at a time."""
    outputs, grads = [], []
    for k in range(K):
        leaves = [x[k].clone().requires_grad_(), weight[k].clone().requires_grad_()]
        if bias is not None:
            leaves.append(bias[k].clone().requires_grad_())
        out = nn.functional.linear(*leaves)
        out.backward(grad[k])
        outputs.append(out.detach())
        grads.append([leaf.grad for leaf in leaves])
    stacked = [torch.stack([g[i] for g in grads]) for i in range(len(grads[0]))]
    return torch.stack(outputs), stacked


def _stacked(x, weight, bias, grad, exact: bool):
    leaves = [t.clone().requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())]
    out = ml.member_linear(leaves[0], leaves[1], leaves[2] if bias is not None else None, exact)
    out.backward(grad)
    return out.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("batch", "inputs", "outputs"), SHAPES)
def test_exact_mode_gives_each_member_its_own_bits(batch: int, inputs: int, outputs: int, bias: bool) -> None:
    tensors = _members(batch, inputs, outputs, bias)
    expected_out, expected_grads = _alone(*tensors)
    for _ in range(2):  # the first call checks the batched products, the second uses the verdicts
        out, grads = _stacked(*tensors, exact=True)
        assert torch.equal(out, expected_out)
        for got, expected in zip(grads, expected_grads, strict=True):
            assert torch.equal(got, expected)


@pytest.mark.parametrize(("batch", "inputs", "outputs"), SHAPES)
def test_fast_mode_agrees_to_a_rounding(batch: int, inputs: int, outputs: int) -> None:
    tensors = _members(batch, inputs, outputs, bias=True)
    expected_out, expected_grads = _alone(*tensors)
    out, grads = _stacked(*tensors, exact=False)
    torch.testing.assert_close(out, expected_out, rtol=1e-6, atol=1e-6)
    for got, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
