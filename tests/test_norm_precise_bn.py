"""Precise BN: after it, running statistics are the true statistics of each BN layer's inputs."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from trainlab.callbacks.precise_bn import PreciseBN, recompute_bn_stats
from trainlab.data.datamodule import ImageDataModule
from trainlab.models.classifier import Classifier
from trainlab.norm import BatchNormScratch, GhostBatchNorm


def mixed_bn_net() -> nn.Sequential:
    """One of each BN layer the callback must handle, in train-mode-dependent order."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        GhostBatchNorm(4, virtual_batch_size=4),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 8),
        BatchNormScratch(8),
        nn.Sigmoid(),
        nn.Linear(8, 3),
        nn.BatchNorm1d(3, track_running_stats=False),  # nothing to recompute: left alone
    )


def capture_inputs(net: nn.Module, batches: list[torch.Tensor]) -> dict[nn.Module, torch.Tensor]:
    """Every BN layer's inputs over the batches, in train mode (as precise BN sees them)."""
    seen: dict[nn.Module, list[torch.Tensor]] = {}
    layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | BatchNormScratch)]
    hooks = [
        m.register_forward_pre_hook(lambda m, a: seen.setdefault(m, []).append(a[0].detach())) for m in layers
    ]
    net.train()
    with torch.no_grad():
        for batch in batches:
            net(batch)
    for hook in hooks:
        hook.remove()
    return {m: torch.cat(xs) for m, xs in seen.items()}


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = x.transpose(0, 1).reshape(x.size(1), -1).double()  # (C, everything else)
    return values.mean(1).float(), values.var(1, correction=1).float()


def test_running_stats_become_the_population_statistics_of_the_batches():
    net = mixed_bn_net()
    batches = [torch.randn(8, 1, 6, 6) * 2 + i for i in range(5)]
    expected = capture_inputs(mixed_bn_net(), batches)  # the same weights (same seed)
    net.eval()
    tracked_before = {
        m: int(m.num_batches_tracked)
        for m in net.modules()
        if hasattr(m, "num_batches_tracked") and m.num_batches_tracked is not None
    }
    weights_before = [p.clone() for p in net.parameters()]

    assert recompute_bn_stats(net, batches) == 5

    checked = 0
    for layer, reference in zip(
        [m for m in net.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | BatchNormScratch)],
        expected.values(),
        strict=True,
    ):
        if layer.running_mean is None:
            continue
        mean, var = channel_stats(reference)
        assert_close(layer.running_mean, mean, rtol=1e-5, atol=1e-5)
        assert_close(layer.running_var, var, rtol=1e-5, atol=1e-5)
        checked += 1
    assert checked == 3  # BatchNorm2d, GhostBatchNorm, BatchNormScratch
    # the model is otherwise as it was: eval mode, same weights, same count of training batches
    assert not any(m.training for m in net.modules())
    assert all(torch.equal(a, b) for a, b in zip(weights_before, net.parameters(), strict=True))
    for module, count in tracked_before.items():
        assert int(module.num_batches_tracked) == count


def test_population_variance_includes_the_spread_of_the_batch_means():
    """Not the average of per-batch variances: batches with different means widen the variance."""
    layer = nn.BatchNorm1d(1)
    batches = [torch.randn(50, 1) * 0.1 + shift for shift in (-3.0, 3.0)]
    recompute_bn_stats(layer, batches)
    pooled = torch.cat(batches)
    assert_close(layer.running_mean, pooled.mean(0), rtol=1e-5, atol=1e-5)
    assert_close(layer.running_var, pooled.var(0), rtol=1e-5, atol=1e-5)
    assert layer.running_var.item() > 8.0  # ~9 from the means alone, vs ~0.01 within a batch


def test_a_compiled_network_is_recomputed_eagerly_with_the_same_numbers():
    """compile=true: the hooked passes compile no graph of their own and give the same statistics."""
    from torch._dynamo.utils import counters

    batches = [torch.randn(8, 1, 6, 6) * 2 + i for i in range(3)]
    reference = mixed_bn_net()
    reference(batches[0])  # a training step's forward, as below (it moves the running statistics)
    recompute_bn_stats(reference, batches)
    torch._dynamo.reset()
    counters.clear()
    net = mixed_bn_net()
    net.compile(backend="eager")  # dynamo's tracing and guards, without inductor's code generation
    net(batches[0])
    assert counters["stats"]["unique_graphs"] == 1
    recompute_bn_stats(net, batches)
    assert counters["stats"]["unique_graphs"] == 1
    for ours, theirs in zip(net.buffers(), reference.buffers(), strict=True):
        assert_close(ours, theirs)
    net.eval()(batches[0])  # compiled again after: a new graph for eval mode
    assert counters["stats"]["unique_graphs"] == 2


def test_callback_recomputes_statistics_before_validation_in_a_real_fit(tmp_path):
    """After fit, the first BN layer's statistics are those of Linear(x) over the training set
    (the first layer's input does not depend on how the batches were drawn)."""
    pl.seed_everything(0)
    datamodule = ImageDataModule(
        source={"_target_": "trainlab.data.sources.digits"}, batch_size=256, val_fraction=0.1
    )
    datamodule.setup()
    model = Classifier(
        network={
            "model": {"_target_": "trainlab.models.mlp.MLP", "depth": 2, "width": 16},
            "norm": {"_target_": "trainlab.norm.batchnorm_scratch", "_partial_": True, "momentum": 0.1},
            "activation": {"_target_": "torch.nn.ReLU", "_partial_": True},
            "input_shape": list(datamodule.input_shape),
            "num_classes": datamodule.num_classes,
        },
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5},
    )
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[PreciseBN(num_batches=1000)],  # more than an epoch: the whole training set
    )
    trainer.fit(model, datamodule=datamodule)

    first_linear, first_bn = model.net.blocks[0][0], model.net.blocks[0][1]
    assert isinstance(first_bn, BatchNormScratch)
    train_set = datamodule.dataset("train")
    images = datamodule.network_input(torch.stack([train_set[i][0] for i in range(len(train_set))])).flatten(
        1
    )
    with torch.no_grad():
        mean, var = channel_stats(first_linear(images))
    assert_close(first_bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    assert_close(first_bn.running_var, var, rtol=1e-4, atol=1e-5)
    # precise BN's own forward passes are not counted as training batches
    assert int(first_bn.num_batches_tracked) == len(train_set) // 256 + 1


def test_num_batches_must_be_positive():
    with pytest.raises(ValueError, match="num_batches=0 must be a positive integer"):
        PreciseBN(num_batches=0)
