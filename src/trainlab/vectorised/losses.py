"""Per-member cross-entropy: K members' losses in one call, each with its own label smoothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def member_cross_entropy(
    logits: Tensor, labels: Tensor, label_smoothing: Tensor | Sequence[float] | float
) -> Tensor:
    """logits [K, B, C], labels [K, B] (class indices), label_smoothing [K] -> [K] mean losses,
    each equal to torch.nn.CrossEntropyLoss(label_smoothing=ls[k])(logits[k], labels[k]).

    Labels may also be class probabilities [K, B, C] (mixed targets, as CrossEntropyLoss takes).
    Sum the result for the backward pass: member k's gradient is then that of its own loss.

    torch's formula (aten/src/ATen/native/LossNLL.cpp, cross_entropy with label smoothing eps over
    C classes, mean over the batch), with log p = log_softmax(logits):
        index targets:       (1 - eps) * mean_b(-log p[b, y_b]) + eps / C * mean_b(-sum_c log p[b, c])
        probability targets: mean_b(-sum_c ((1 - eps) * q[b, c] + eps / C) * log p[b, c])
    torch forms (1 - eps) and eps / C as doubles and rounds them to the logits' dtype; so does this.
    """
    if logits.dim() != 3:
        raise ValueError(f"member_cross_entropy takes logits [K, B, C], got shape {tuple(logits.shape)}.")
    if torch.is_autocast_enabled(logits.device.type):
        logits = logits.float()  # autocast runs cross_entropy in float32: so does this
    members, _, classes = logits.shape
    eps = torch.as_tensor(label_smoothing, dtype=torch.float64, device=logits.device)
    eps = eps.expand(members) if eps.dim() == 0 else eps
    if eps.shape != (members,):
        raise ValueError(
            f"label_smoothing must be one value or one per member ({members}), got shape {tuple(eps.shape)}."
        )
    keep = (1 - eps).to(logits.dtype).view(members, 1)
    spread = (eps / classes).to(logits.dtype).view(members, 1)
    log_p = logits.log_softmax(-1)
    if labels.is_floating_point():
        if labels.shape != logits.shape:
            raise ValueError(
                f"probability targets must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}."
            )
        targets = labels * keep.unsqueeze(-1) + spread.unsqueeze(-1)
        return -(log_p * targets).sum(-1).mean(-1)
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"class-index labels must be [K, B] = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}."
        )
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [K, B]
    smooth = -log_p.sum(-1)  # [K, B]
    return (keep * nll + spread * smooth).mean(-1)
