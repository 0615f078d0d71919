"""A batched kernel where it gives each member the bits of its own calls, checked once per shape.

The members' layers (member_linear, member_batch_norm) can run one kernel over all K members or
the member network's own kernel K times. The two give the same bits for most shapes on a given
machine, not for all, and nothing documents which. So in exact mode each computation is checked
the first time it meets a key (its kind, its operands' shapes, strides, dtype and device, its
options): both run on that call's own tensors, the per-member result is returned, and whether
the batched one was the same bit for bit is kept for that key. From then on the key runs batched
or member by member accordingly. Fast mode runs batched without checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

Result = TypeVar("Result", Tensor, tuple)

# key -> whether the batched computation gives the per-member bits
_verdicts: dict[tuple, bool] = {}


def checked(
    key: tuple, batched: Callable[[], Result], per_member: Callable[[], Result], exact: bool
) -> Result:
    """`batched()` where it gives the bits of `per_member()` (always, if not `exact`); each returns
    a tensor or a tuple of tensors (or None)."""
    if not exact:
        return batched()
    verdict = _verdicts.get(key)
    if verdict is None:
        expected = per_member()
        _verdicts[key] = same(batched(), expected)
        return expected
    return batched() if verdict else per_member()


def layout(*tensors: Tensor | None) -> tuple:
    """What a verdict depends on in its operands: shape, strides, dtype, device (None: absent)."""
    return tuple(None if t is None else (t.shape, t.stride(), t.dtype, t.device) for t in tensors)


def same(got: Tensor | Sequence[Tensor | None], expected: Tensor | Sequence[Tensor | None]) -> bool:
    """Bit for bit, tensor by tensor (None only where both are None)."""
    if isinstance(got, Tensor) or isinstance(expected, Tensor):
        got, expected = (got,), (expected,)
    return all(
        (a is None and b is None) or (a is not None and b is not None and bool(torch.equal(a, b)))
        for a, b in zip(got, expected, strict=True)
    )
