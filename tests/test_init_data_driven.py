"""Data-driven schemes: LSUV reaches unit variance on its batch; layer-wise pretraining lowers each
autoencoder's reconstruction loss; apply_init hands data to the schemes that ask for it."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainlab.init import apply_init, core
from trainlab.init.layerwise import layerwise_pretrain
from trainlab.init.lsuv import lsuv
from trainlab.models.cnn import CNN
from trainlab.models.mlp import MLP
from trainlab.models.resnet import ResNet
from trainlab.norm import batchnorm, none
from trainlab.utils.config import ConfigError


@pytest.fixture(scope="module")
def digits() -> DataLoader:
    """scikit-learn's 8x8 digits, standardised, as a shuffled loader of (images, labels)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    images = (images - images.mean()) / images.std()
    generator = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(images, torch.tensor(data.target)), batch_size=64, shuffle=True, generator=generator
    )


class FakeDataModule:
    def __init__(self, loader):
        self.loader = loader

    def train_dataloader(self):
        return self.loader


def layer_output_variances(network: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    outputs: dict[str, float] = {}

    def record(name: str):
        def hook(_module, _args, output) -> None:
            outputs[name] = output.var().item()

        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in core.weight_layers(network)]
    with torch.no_grad():
        network(inputs)
    for handle in handles:
        handle.remove()
    return outputs


# --- LSUV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLP((1, 8, 8), 10, none, nn.Tanh, depth=4, width=256),
        lambda: MLP((1, 8, 8), 10, none, nn.ReLU, depth=3, width=128),
        lambda: CNN((1, 8, 8), 10, batchnorm, nn.ReLU, depth=2, width=16),
        lambda: ResNet((1, 8, 8), 10, none, nn.ReLU, depth=3, width=8, stages=2),
    ],
    ids=["mlp-tanh", "mlp-relu", "cnn-batchnorm", "resnet"],
)
@pytest.mark.parametrize("tol", [0.1, 0.01])
def test_lsuv_gives_unit_variance_outputs_on_its_batch(make, tol, digits):
    torch.manual_seed(0)
    network = make()
    batch = next(iter(digits))
    stats = lsuv(network, [batch], tol=tol)
    variances = layer_output_variances(network.train(), batch[0])
    assert len(variances) == len(core.weight_layers(network)) >= 4
    for name, variance in variances.items():
        assert abs(variance - 1) < tol, f"{name}: output variance {variance}"
        assert stats[f"{name}/output_var"] == pytest.approx(variance, rel=1e-5)
    # without LSUV the same network is far from unit variance somewhere (it does something)
    torch.manual_seed(0)
    plain = layer_output_variances(make().train(), batch[0])
    assert max(abs(v - 1) for v in plain.values()) > 0.3


def test_lsuv_restores_running_statistics_and_mode(digits):
    network = CNN((1, 8, 8), 10, batchnorm, nn.ReLU, depth=1, width=8).eval()
    before = {name: b.clone() for name, b in network.named_buffers()}
    lsuv(network, digits)
    assert not network.training
    for name, buffer in network.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_lsuv_starts_from_orthonormal_weights():
    network = MLP((1, 4, 4), 4, none, nn.ReLU, depth=1, width=64)
    inputs = torch.randn(256, 1, 4, 4)
    lsuv(network, [(inputs, None)], tol=1e9)  # tolerance so wide that nothing is rescaled
    weight = network.blocks[0][0].weight.detach()  # 64 x 16: orthonormal columns
    torch.testing.assert_close(weight.T @ weight, torch.eye(16), atol=1e-5, rtol=0)


def test_lsuv_bad_input():
    network = MLP((1, 4, 4), 4, none, nn.ReLU, depth=1, width=8)
    with pytest.raises(ConfigError, match=r"init.tol=0.0 must be > 0"):
        lsuv(network, [(torch.randn(4, 1, 4, 4), None)], tol=0.0)
    with pytest.raises(ConfigError, match=r"init.max_iter=0 must be >= 1"):
        lsuv(network, [(torch.randn(4, 1, 4, 4), None)], max_iter=0)
    with pytest.raises(ConfigError, match="no batch"):
        lsuv(network, [])


# --- layer-wise pretraining ------------------------------------------------------------------------


def test_layerwise_pretraining_lowers_each_reconstruction_loss(digits, caplog):
    torch.manual_seed(0)
    network = MLP((1, 8, 8), 10, none, nn.Sigmoid, depth=3, width=64)
    head = network.head.weight.detach().clone()
    with caplog.at_level("INFO", logger="trainlab.init.layerwise"):
        stats = layerwise_pretrain(network, digits, epochs=3, max_batches=12, lr=3e-3)
    layers = ["blocks.0", "blocks.1", "blocks.2"]
    for name in layers:
        before, after = stats[f"{name}/recon_loss_before"], stats[f"{name}/recon_loss_after"]
        assert after < 0.8 * before, f"{name}: {before} -> {after}"
        epochs = [stats[f"{name}/recon_loss_epoch{e}"] for e in (1, 2, 3)]
        assert epochs[2] < epochs[0]
        assert f"layerwise_pretrain: {name} epoch 3/3 reconstruction loss" in caplog.text
    assert torch.equal(network.head.weight, head)  # the head is left for supervised training
    assert all(p.grad is None or not p.requires_grad for p in network.head.parameters())


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (
            lambda: CNN((1, 8, 8), 10, batchnorm, nn.ReLU, depth=2, width=8, convs_per_block=1),
            {
                "blocks.0",
                "blocks.2",
            },  # the two conv blocks; the max-pooling between them has nothing to train
        ),
        (
            lambda: ResNet((1, 8, 8), 10, none, nn.ReLU, depth=2, width=8, stages=2),
            {"blocks.stem", "blocks.stage1_block1", "blocks.stage2_block1"},  # the last one downsamples
        ),
    ],
    ids=["cnn", "resnet"],
)
def test_layerwise_pretraining_of_conv_blocks(make, names, digits):
    torch.manual_seed(0)
    network = make()
    stats = layerwise_pretrain(network, digits, epochs=2, max_batches=6, lr=3e-3)
    assert {key.split("/")[0] for key in stats} == names
    for name in names:
        assert stats[f"{name}/recon_loss_after"] < stats[f"{name}/recon_loss_before"], name


def test_layerwise_pretraining_needs_hidden_layers():
    with pytest.raises(ConfigError, match=r"init=layerwise_pretrain needs a network whose hidden layers"):
        layerwise_pretrain(MLP((1, 4, 4), 3, none, nn.ReLU, depth=0), [(torch.randn(2, 1, 4, 4), None)])
    with pytest.raises(ConfigError, match=r"init.epochs=0 must be >= 1"):
        layerwise_pretrain(MLP((1, 4, 4), 3, none, nn.ReLU), [], epochs=0)


# --- apply_init: who gets data --------------------------------------------------------------------


def test_apply_init_passes_the_training_loader_to_schemes_that_ask(digits):
    network = MLP((1, 8, 8), 10, none, nn.Tanh, depth=2, width=32)
    stats = apply_init(
        network,
        {"_target_": "trainlab.init.lsuv.lsuv", "_partial_": True, "tol": 0.05},
        FakeDataModule(digits),
    )
    assert stats["head/output_var"] == pytest.approx(1, abs=0.05)

    seen = {}

    def scheme(net, datamodule, batches, scale: float = 1.0):
        seen.update(datamodule=datamodule, batches=batches, scale=scale)

    module = FakeDataModule(digits)
    assert apply_init(network, scheme, module) == {}
    assert seen == {"datamodule": module, "batches": digits, "scale": 1.0}


def test_apply_init_without_data_for_a_data_driven_scheme_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"init trainlab.init.lsuv.lsuv needs training data \(batches\)"):
        apply_init(
            MLP((1, 4, 4), 3, none, nn.ReLU), {"_target_": "trainlab.init.lsuv.lsuv", "_partial_": True}
        )


def test_an_init_config_without_partial_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"needs `_partial_: true`"):
        apply_init(MLP((1, 4, 4), 3, none, nn.ReLU), {"_target_": "trainlab.init.schemes.zeros"})
