"""same_bits.checked: a batched computation runs where it gave the per-member bits on its first
call for a key, member by member where it did not; fast mode never checks."""

from __future__ import annotations

import torch

from trainlab.vectorised import same_bits


def test_a_batched_computation_that_differs_runs_member_by_member(monkeypatch) -> None:
    monkeypatch.setattr(same_bits, "_verdicts", {})
    operand = torch.ones(3, 4)
    calls = {"batched": 0, "per_member": 0}

    def batched(offset: float):
        def run():
            calls["batched"] += 1
            return operand + offset

        return run

    def per_member():
        calls["per_member"] += 1
        return operand.clone()

    off = ("off", *same_bits.layout(operand))
    # the first call compares and returns the per-member bits; a mismatch keeps the per-member calls
    assert torch.equal(same_bits.checked(off, batched(1e-7), per_member, exact=True), operand)
    assert same_bits.checked(off, batched(1e-7), per_member, exact=True) is not None
    assert calls == {"batched": 1, "per_member": 2}
    # a match: from the second call on only the batched kernel runs
    calls.update(batched=0, per_member=0)
    matching = ("same", *same_bits.layout(operand))
    same_bits.checked(matching, batched(0.0), per_member, exact=True)
    same_bits.checked(matching, batched(0.0), per_member, exact=True)
    assert calls == {"batched": 2, "per_member": 1}
    # fast mode never checks
    calls.update(batched=0, per_member=0)
    same_bits.checked(off, batched(1e-7), per_member, exact=False)
    assert calls == {"batched": 1, "per_member": 0}
    # the verdicts are kept per key: the operand's layout is part of it
    assert same_bits._verdicts == {off: False, matching: True}
    assert same_bits.layout(operand, None) == (
        (operand.shape, operand.stride(), operand.dtype, operand.device),
        None,
    )


def test_tuples_compare_tensor_by_tensor() -> None:
    a = torch.ones(2)
    assert same_bits.same((a, None), (a.clone(), None))
    assert not same_bits.same((a, None), (a, a))
    assert not same_bits.same((a,), (a + 1e-7,))
    assert same_bits.same(a, a.clone())
