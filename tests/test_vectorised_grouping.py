"""Which jobs of a multirun train together (trainlab.vectorised.grouping)."""

from __future__ import annotations

import pytest

from trainlab.vectorised.grouping import group_key, plan_groups, why_not_vectorised

DIGITS = ["data=digits", "model=mlp", "model.width=16"]


def test_seed_init_lr_weight_decay_and_label_smoothing_keep_jobs_together(make_cfg) -> None:
    base = make_cfg(*DIGITS, run="a")
    varied = make_cfg(
        *DIGITS,
        "seed=7",
        "init=xavier_normal",
        "optimizer.lr=0.1",
        "optimizer.weight_decay=0.01",
        "loss.label_smoothing=0.1",
        run="b",
    )
    assert why_not_vectorised(base) is None
    assert group_key(base) == group_key(varied)


@pytest.mark.parametrize(
    "override", ["model.width=32", "norm=layernorm", "optimizer=sgd", "data.batch_size=32"]
)
def test_keys_that_change_the_network_or_training_split_groups(make_cfg, override: str) -> None:
    assert group_key(make_cfg(*DIGITS, run="a")) != group_key(make_cfg(*DIGITS, override, run="b"))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["model=timm", "data=digits"], "not one of trainlab's own networks"),
        (["mix=mixup", *DIGITS], "mix"),
        (["compile=true", *DIGITS], "compile"),
        (["callbacks=default", "+callbacks.early_stopping._target_=x", *DIGITS], "early_stopping"),
        (["transfer=linear_probe", *DIGITS], "transfer=linear_probe"),
        (["experiment=noise_as_l2"], "module="),
    ],
)
def test_a_job_that_cannot_be_vectorised_says_why(make_cfg, overrides: list[str], reason: str) -> None:
    explained = why_not_vectorised(make_cfg(*overrides))
    assert explained is not None and reason in explained


def test_plan_groups_keeps_the_sweep_order_and_splits_large_groups(make_cfg) -> None:
    configs = [
        make_cfg(*DIGITS, "seed=1", run="0"),
        make_cfg(*DIGITS, "model.width=32", run="1"),
        make_cfg(*DIGITS, "seed=2", run="2"),
        make_cfg(*DIGITS, "mix=mixup", run="3"),
        make_cfg(*DIGITS, "seed=3", run="4"),
    ]
    plan = plan_groups(configs, max_members=2)
    assert [group.jobs for group in plan] == [(0, 2), (1,), (3,), (4,)]
    assert [group.vectorised for group in plan] == [True, False, False, False]
    assert "mix" in plan[2].reason and plan[1].reason == ""
    with pytest.raises(ValueError, match="max_members"):
        plan_groups(configs, max_members=0)


def test_launcher_options_are_checked() -> None:
    from hydra_plugins.trainlab_launchers.vectorised_launcher import VectorisedLauncher

    assert VectorisedLauncher(exact=False).exact is False
    assert VectorisedLauncher().exact is None  # exact on the CPU, fast on a GPU
    with pytest.raises(ValueError, match="exact='yes'.*null.*true.*false"):
        VectorisedLauncher(exact="yes")
    with pytest.raises(ValueError, match="min_members=0"):
        VectorisedLauncher(min_members=0)


def test_a_group_imports_the_training_stack_as_a_job_does(monkeypatch, make_cfg) -> None:
    """Spared from the garbage collector and frozen (trainlab.stack.import_training_stack), with
    the group's own modules, before its first member joins."""
    import trainlab.stack
    from hydra_plugins.trainlab_launchers.vectorised_launcher import VectorisedLauncher

    imported = []

    def recording(cfg, *modules):
        imported.append(modules)
        raise RuntimeError("stop before the members join")

    monkeypatch.setattr(trainlab.stack, "import_training_stack", recording)
    with pytest.raises(RuntimeError, match="stop before"):
        VectorisedLauncher()._launch_group([make_cfg(*DIGITS)])
    assert imported == [("trainlab.vectorised.group",)]
