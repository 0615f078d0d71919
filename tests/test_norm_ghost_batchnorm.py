"""Ghost BatchNorm: each virtual batch normalised alone; one virtual batch is plain BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from trainlab.norm import BatchNormScratch, GhostBatchNorm

C = 4


def with_params(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 1.5, C))
        layer.bias.copy_(torch.linspace(-0.5, 0.5, C))
    return layer


def run(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    y = layer(x)
    y.backward(grad_out)
    return y.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()


@pytest.mark.parametrize("shape", [(16, C), (8, C, 3, 3)], ids=["1d", "2d"])
def test_virtual_batch_of_the_whole_batch_is_batchnorm(shape):
    ghost = with_params(GhostBatchNorm(C, virtual_batch_size=shape[0]))
    torch_bn = with_params((nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(C))
    for step in range(4):
        x, grad_out = torch.randn(shape) * 2 + step, torch.randn(shape)
        for got, expected in zip(run(ghost, x, grad_out), run(torch_bn, x, grad_out), strict=True):
            assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert_close(ghost.running_mean, torch_bn.running_mean)
    assert_close(ghost.running_var, torch_bn.running_var)
    ghost.eval(), torch_bn.eval()
    x = torch.randn(shape)
    assert_close(ghost(x), torch_bn(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(16, C), (8, C, 3, 3)], ids=["1d", "2d"])
def test_each_virtual_batch_is_normalised_with_its_own_statistics(shape):
    """Ghost BN over 4 virtual batches == one BN applied to each quarter in turn: same outputs,
    same summed gradients, same running averages (one momentum step per virtual batch)."""
    size = shape[0] // 4
    ghost = with_params(GhostBatchNorm(C, virtual_batch_size=size, momentum=0.3))
    sequential = with_params(BatchNormScratch(C, momentum=0.3))
    x = torch.randn(shape) * 3 + torch.arange(shape[0]).view(-1, *([1] * (len(shape) - 1)))
    grad_out = torch.randn(shape)
    y, dx, dgamma, dbeta = run(ghost, x, grad_out)

    xs = x.clone().requires_grad_(True)
    sequential.zero_grad()
    y_ref = torch.cat([sequential(chunk) for chunk in xs.split(size)])
    y_ref.backward(grad_out)
    assert_close(y, y_ref.detach(), rtol=1e-5, atol=1e-5)
    assert_close(dx, xs.grad, rtol=1e-4, atol=1e-5)
    assert_close(dgamma, sequential.weight.grad, rtol=1e-4, atol=1e-4)
    assert_close(dbeta, sequential.bias.grad, rtol=1e-5, atol=1e-5)
    assert_close(ghost.running_mean, sequential.running_mean)
    assert_close(ghost.running_var, sequential.running_var)
    assert int(ghost.num_batches_tracked) == 4
    # and it differs from whole-batch BN: the virtual batches have different means
    assert not torch.allclose(y, with_params(BatchNormScratch(C))(x).detach(), atol=1e-3)


def test_eval_mode_uses_running_averages_for_any_batch_size():
    ghost = GhostBatchNorm(C, virtual_batch_size=4)
    ghost(torch.randn(8, C) + 2)
    ghost.eval()
    x = torch.randn(3, C)  # 3 is not a multiple of 4: fine in eval mode
    expected = (x - ghost.running_mean) / torch.sqrt(ghost.running_var + ghost.eps)
    assert_close(ghost(x), expected)


def test_bad_virtual_batch_size_gives_clear_errors():
    ghost = GhostBatchNorm(C, virtual_batch_size=16)
    with pytest.raises(ValueError, match=r"norm.virtual_batch_size=16 does not divide this batch of 24"):
        ghost(torch.randn(24, C))
    with pytest.raises(ValueError, match=r"virtual_batch_size=1 leaves one value per channel"):
        GhostBatchNorm(C, virtual_batch_size=1)(torch.randn(8, C))
    with pytest.raises(ValueError, match="must be a positive integer"):
        GhostBatchNorm(C, virtual_batch_size=0)
    # one example per virtual batch is fine on feature maps: its positions give the statistics
    assert GhostBatchNorm(C, virtual_batch_size=1)(torch.randn(2, C, 3, 3)).shape == (2, C, 3, 3)
