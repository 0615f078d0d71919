"""member_cross_entropy equals torch's CrossEntropyLoss per member, label smoothing included."""

from __future__ import annotations

import pytest
import torch

from trainlab.vectorised.losses import member_cross_entropy

SMOOTHING = [0.0, 0.1, 0.25, 0.5]


def test_each_member_equals_cross_entropy_loss_with_its_smoothing() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 16, 7, generator=generator) * 3
    labels = torch.randint(0, 7, (4, 16), generator=generator)
    losses = member_cross_entropy(logits, labels, torch.tensor(SMOOTHING))
    assert losses.shape == (4,)
    for k, eps in enumerate(SMOOTHING):
        expected = torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits[k], labels[k])
        assert abs(losses[k].item() - expected.item()) < 1e-6


def test_gradients_equal_each_members_own() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 8, 5, generator=generator, requires_grad=True)
    labels = torch.randint(0, 5, (4, 8), generator=generator)
    member_cross_entropy(logits, labels, SMOOTHING).sum().backward()
    for k, eps in enumerate(SMOOTHING):
        own = logits.detach()[k].clone().requires_grad_()
        torch.nn.CrossEntropyLoss(label_smoothing=eps)(own, labels[k]).backward()
        torch.testing.assert_close(logits.grad[k], own.grad, rtol=0, atol=1e-6)


def test_probability_targets_equal_cross_entropy_loss() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 8, 5, generator=generator)
    targets = torch.softmax(torch.randn(4, 8, 5, generator=generator), -1)
    losses = member_cross_entropy(logits, targets, SMOOTHING)
    for k, eps in enumerate(SMOOTHING):
        expected = torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits[k], targets[k])
        assert abs(losses[k].item() - expected.item()) < 1e-6


def test_one_smoothing_for_all_and_bad_shapes() -> None:
    logits, labels = torch.randn(2, 3, 4), torch.randint(0, 4, (2, 3))
    expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits[1], labels[1])
    assert abs(member_cross_entropy(logits, labels, 0.1)[1].item() - expected.item()) < 1e-6
    with pytest.raises(ValueError, match="one per member"):
        member_cross_entropy(logits, labels, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"logits \[K, B, C\]"):
        member_cross_entropy(logits[0], labels, 0.1)


def test_under_autocast_the_loss_is_computed_in_float32_as_torch_does() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 5, generator=generator).bfloat16()
    labels = torch.randint(0, 5, (3, 8), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = member_cross_entropy(logits, labels, [0.0, 0.1, 0.2])
        expected = torch.stack(
            [
                torch.nn.functional.cross_entropy(logits[k], labels[k], label_smoothing=eps)
                for k, eps in enumerate([0.0, 0.1, 0.2])
            ]
        )
    assert losses.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(losses, expected, rtol=0, atol=1e-6)
