"""BatchNorm from the paper's algorithm against torch's BatchNorm, to float32 precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from trainlab.norm import BatchNormScratch

C = 6
SHAPES = {"1d": (32, C), "2d": (8, C, 5, 4)}


def torch_bn(shape: tuple[int, ...], **options) -> nn.Module:
    return (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(C, **options)


def twin_layers(shape, **options) -> tuple[BatchNormScratch, nn.Module]:
    """A scratch BN and a torch BN with the same (non-trivial) gamma and beta."""
    ours, theirs = BatchNormScratch(C, **options), torch_bn(shape, **options)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.copy_(torch.linspace(0.5, 2.0, C))
            theirs.bias.copy_(torch.linspace(-1.0, 1.0, C))
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
    return ours, theirs


def batch(shape, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # channel-dependent mean and scale, so that a mix-up of dimensions would show
    scale = torch.arange(1, C + 1, dtype=torch.float32).view(1, C, *([1] * (len(shape) - 2)))
    return torch.randn(shape, generator=generator) * scale + 3.0 * scale


def upstream_grad(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def forward_backward(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    y = layer(x)
    y.backward(grad_out)
    grads = (layer.weight.grad, layer.bias.grad) if layer.affine else (None, None)
    return y.detach(), x.grad, *grads


@pytest.mark.parametrize("kind", SHAPES)
def test_train_mode_forward_backward_and_running_stats_match_torch(kind):
    shape = SHAPES[kind]
    ours, theirs = twin_layers(shape, momentum=0.2)
    for step in range(5):  # several steps: the running averages compound
        x, grad_out = batch(shape, step), upstream_grad(shape, 100 + step)
        y, dx, dgamma, dbeta = forward_backward(ours, x, grad_out)
        y_ref, dx_ref, dgamma_ref, dbeta_ref = forward_backward(theirs, x, grad_out)
        assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
        assert_close(dgamma, dgamma_ref, rtol=1e-4, atol=1e-4)
        assert_close(dbeta, dbeta_ref, rtol=1e-5, atol=1e-5)
    assert_close(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-6)
    assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 5
    # the running statistics really moved away from their (0, 1) start
    assert ours.running_mean.abs().min() > 1.0


@pytest.mark.parametrize("kind", SHAPES)
def test_batch_statistics_follow_the_algorithm(kind):
    shape = SHAPES[kind]
    ours = BatchNormScratch(C, affine=False, momentum=1.0)
    x = batch(shape, 0)
    y = ours(x)
    dims = [0, *range(2, x.dim())]
    # normalised output: zero mean, unit (biased) variance per channel, up to eps
    assert_close(y.mean(dims), torch.zeros(C), rtol=0, atol=1e-5)
    assert_close(y.var(dims, correction=0), torch.ones(C), rtol=1e-4, atol=1e-4)
    # momentum 1: the running values are this batch's mean and unbiased variance
    assert_close(ours.running_mean, x.mean(dims))
    assert_close(ours.running_var, x.var(dims, correction=1))


@pytest.mark.parametrize("kind", SHAPES)
def test_eval_mode_uses_running_averages_like_torch(kind):
    shape = SHAPES[kind]
    ours, theirs = twin_layers(shape)
    for step in range(3):
        x = batch(shape, step)
        ours(x), theirs(x)
    ours.eval(), theirs.eval()
    x, grad_out = batch(shape, 10), upstream_grad(shape, 11)
    y, dx, dgamma, dbeta = forward_backward(ours, x, grad_out)
    y_ref, dx_ref, dgamma_ref, dbeta_ref = forward_backward(theirs, x, grad_out)
    assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert_close(dx, dx_ref, rtol=1e-5, atol=1e-6)
    assert_close(dgamma, dgamma_ref, rtol=1e-4, atol=1e-4)
    assert_close(dbeta, dbeta_ref, rtol=1e-5, atol=1e-5)
    # eval mode does not touch the running averages
    before = ours.running_mean.clone()
    ours(batch(shape, 12))
    assert torch.equal(ours.running_mean, before)


@pytest.mark.parametrize("kind", SHAPES)
def test_eval_output_of_one_example_does_not_depend_on_the_batch(kind):
    shape = SHAPES[kind]
    layer = BatchNormScratch(C)
    layer(batch(shape, 0))
    layer.eval()
    x = batch(shape, 1)
    alone = layer(x[:1])
    other_batch = batch(shape, 2)
    other_batch[0] = x[0]
    assert_close(layer(x)[:1], alone)
    assert_close(layer(other_batch)[:1], alone)
    # whereas in training mode it does
    layer.train()
    assert not torch.allclose(layer(x)[:1], layer(other_batch)[:1])


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize(
    "options", [{"affine": False}, {"track_running_stats": False}, {"eps": 1e-2, "momentum": 0.5}]
)
def test_options_match_torch(kind, options):
    shape = SHAPES[kind]
    ours, theirs = twin_layers(shape, **options)
    for step in range(3):
        x, grad_out = batch(shape, step), upstream_grad(shape, 50 + step)
        y, dx, *_ = forward_backward(ours, x, grad_out)
        y_ref, dx_ref, *_ = forward_backward(theirs, x, grad_out)
        assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
    ours.eval(), theirs.eval()  # without running stats, eval mode also uses batch statistics
    x = batch(shape, 9)
    assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    if not options.get("track_running_stats", True):
        assert ours.running_mean is None and ours.running_var is None


def test_backward_passes_gradcheck_in_float64():
    layer = BatchNormScratch(3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


def test_state_dict_loads_into_torch_batchnorm():
    ours = BatchNormScratch(C)
    ours(batch(SHAPES["2d"], 0))
    theirs = nn.BatchNorm2d(C)
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = batch(SHAPES["2d"], 1)
    assert_close(ours(x), theirs(x))


def test_bad_input_gives_clear_errors():
    layer = BatchNormScratch(C)
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer(torch.randn(1, C))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 6, \.\.\.\)"):
        layer(torch.randn(4, C + 1))
    with pytest.raises(ValueError, match="norm.momentum"):
        BatchNormScratch(C, momentum=1.5)
    with pytest.raises(ValueError, match="norm.eps"):
        BatchNormScratch(C, eps=0.0)
    layer.eval()  # one example is fine once the running averages are used
    assert layer(torch.randn(1, C)).shape == (1, C)


def test_half_precision_input_is_normalised_in_float32():
    ours, theirs = twin_layers(SHAPES["2d"])
    x = batch(SHAPES["2d"], 0)
    y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert_close(y.float(), theirs(x.bfloat16().float()), rtol=1e-2, atol=1e-2)
    assert_close(ours.running_mean, theirs.running_mean)
    assert ours.running_mean.dtype == torch.float32
