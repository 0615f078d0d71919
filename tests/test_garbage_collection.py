"""The training stack is imported without full garbage collections and frozen once per process
(trainlab.run.garbage_collection). Run in fresh processes: freezing is for the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _run(body: str) -> dict:
    script = textwrap.dedent(
        """
        import gc, json
        from trainlab.run.garbage_collection import imports_spared_from_garbage_collection

        full = []
        gc.callbacks.append(lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2 else None)
        kept = []
        """
    ) + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_full_collection_while_importing_and_everything_frozen_after():
    outcome = _run(
        """
        thresholds = gc.get_threshold()
        with imports_spared_from_garbage_collection():
            kept += [[i] for i in range(400_000)]  # what an import keeps: long-lived containers
            full_during = len(full)
        print(json.dumps({"full_during": full_during, "frozen": gc.get_freeze_count(),
                          "restored": gc.get_threshold() == thresholds}))
        """
    )
    assert outcome["full_during"] == 0
    assert outcome["frozen"] >= 400_000
    assert outcome["restored"]


def test_the_same_allocations_without_it_run_full_collections():
    """What the context manager spares (the test above would pass vacuously without this)."""
    outcome = _run(
        """
        kept += [[i] for i in range(400_000)]
        print(json.dumps({"full": len(full)}))
        """
    )
    assert outcome["full"] > 0


def test_a_later_use_changes_nothing_and_an_error_restores_the_thresholds():
    outcome = _run(
        """
        thresholds = gc.get_threshold()
        try:
            with imports_spared_from_garbage_collection():
                raise ImportError("no module named albumentations")
        except ImportError:
            pass
        after_error = {"restored": gc.get_threshold() == thresholds, "frozen": gc.get_freeze_count()}
        with imports_spared_from_garbage_collection():
            pass
        frozen = gc.get_freeze_count()
        with imports_spared_from_garbage_collection():
            untouched = gc.get_threshold() == thresholds
            kept += [[i] for i in range(1000)]
        print(json.dumps({**after_error, "untouched": untouched, "frozen_once": gc.get_freeze_count() == frozen}))
        """
    )
    assert outcome["restored"] and outcome["frozen"] == 0  # a failed import freezes nothing
    assert outcome["untouched"] and outcome["frozen_once"]


def test_the_training_stack_and_a_launchers_modules_are_imported_spared_and_frozen():
    """What `trainlab.train` and the vectorised launcher import before their jobs: frozen with the
    stack, so the group's full collections (and the one at exit) do not walk them."""
    outcome = _run(
        """
        import sys
        from omegaconf import OmegaConf
        from trainlab.stack import import_training_stack

        import_training_stack(OmegaConf.create({"logger": None}), "trainlab.vectorised.group")
        print(json.dumps({"full": len(full), "frozen": gc.get_freeze_count(),
                          "group": "trainlab.vectorised.group" in sys.modules,
                          "lightning": "lightning.pytorch" in sys.modules}))
        """
    )
    assert outcome["group"] and outcome["lightning"]
    assert outcome["full"] == 0
    assert outcome["frozen"] > 100_000


@pytest.mark.parametrize(
    "entry, overrides, config_name",
    [
        ("eval.evaluate", ["ckpt_path=last.ckpt"], "eval"),
        ("lr_find.lr_find", ["data=digits", "model=mlp"], "train"),
    ],
)
def test_entry_points_that_run_a_trainer_import_the_stack_through_it(
    monkeypatch, make_cfg, entry, overrides, config_name
):
    """trainlab.eval and trainlab.lr_find, as trainlab.train: before anything else of their run."""
    import importlib

    import trainlab.stack

    def first(cfg, *modules):
        raise RuntimeError("the stack first")

    monkeypatch.setattr(trainlab.stack, "import_training_stack", first)
    module, function = entry.split(".")
    with pytest.raises(RuntimeError, match="the stack first"):
        getattr(importlib.import_module(f"trainlab.{module}"), function)(
            make_cfg(*overrides, config_name=config_name)
        )
