"""member_batch_norm: the members' torch BatchNorm as one batch norm over K x C channels, with each
member's own bits (forward and backward checked per shape), else member by member."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.vectorised import member_batch_norm as mbn
from trainlab.vectorised import same_bits

K = 4


def _members(shape: tuple[int, ...], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    channels = shape[1]
    x = torch.randn(K, *shape, generator=generator) * 3 + 1  # not normalised already
    weight = torch.randn(K, channels, generator=generator)
    bias = torch.randn(K, channels, generator=generator)
    grad = torch.randn(K, *shape, generator=generator)
    return x, weight, bias, grad


def _run(x, weight, bias, grad, training: bool, stacked: bool):
    """Outputs, gradients and running statistics of the K members, stacked or one by one."""
    channels = x.shape[2]
    mean, var = torch.zeros(K, channels), torch.ones(K, channels)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]

    def per_member():
        return torch.stack(
            [
                nn.functional.batch_norm(
                    leaves[0][k], mean[k], var[k], leaves[1][k], leaves[2][k], training, 0.1, 1e-5
                )
                for k in range(K)
            ]
        )

    if stacked:
        out = mbn.member_batch_norm(leaves[0], mean, var, leaves[1], leaves[2], training, 0.1, 1e-5)
    else:
        out = per_member()
    out.backward(grad)
    return [out.detach(), *(leaf.grad for leaf in leaves), mean, var]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(16, 8, 6, 6), (7, 5, 3, 3), (32, 12), (9, 3)])
def test_members_get_their_own_bits(shape: tuple[int, ...], training: bool) -> None:
    tensors = _members(shape)
    expected = _run(*tensors, training, stacked=False)
    for _ in range(2):  # the checking call, then the batched one
        got = _run(*tensors, training, stacked=True)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
        assert got[0].is_contiguous()  # the members' own layout for what follows


@pytest.mark.parametrize("stage", ["forward", "backward"])
def test_a_batched_pass_that_differs_runs_member_by_member(monkeypatch, stage: str) -> None:
    monkeypatch.setattr(same_bits, "_verdicts", {})
    original = mbn._forward if stage == "forward" else mbn._backward_pass

    def off_when_batched(*args, batched: bool):
        results = original(*args, batched=batched)
        return tuple(t + 1e-3 if batched and t is not None else t for t in results)

    monkeypatch.setattr(mbn, "_forward" if stage == "forward" else "_backward_pass", off_when_batched)
    tensors = _members((8, 3, 4, 4))
    expected = _run(*tensors, True, stacked=False)
    for _ in range(2):
        got = _run(*tensors, True, stacked=True)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
    verdicts = {key[1]: same for key, same in same_bits._verdicts.items() if key[0] == "batch_norm"}
    assert verdicts[stage] is False
    assert verdicts["backward" if stage == "forward" else "forward"] is True


def test_batchnorm1d_batches_of_few_channels_keep_their_bits() -> None:
    # the backward of [B, C] with few channels reduces in another order batched: checked, per member
    tensors = _members((9, 3))
    expected = _run(*tensors, True, stacked=False)
    for _ in range(2):
        for a, b in zip(_run(*tensors, True, stacked=True), expected, strict=True):
            assert torch.equal(a, b)
