"""The training stack (torch, Lightning, the data pipelines), imported once per process by every
entry point that runs a Lightning Trainer, before its run starts.

Imported here, the stack is spared from the garbage collector's full scans while it loads and
frozen after (trainlab.run.garbage_collection). Imported anywhere else first, it is not: every
full collection of the run then walks its half a million objects (0.3 s each on a 2-core CPU),
and one more at the process's exit took 1.6 s (BENCHMARKS.md, "Vectorised studies").
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig


def import_training_stack(cfg: DictConfig, *modules: str) -> None:
    """Import torch, Lightning, the data pipelines and `modules` once per process, spared from
    the garbage collector's scans (trainlab.run.garbage_collection); start W&B's service process
    meanwhile. `modules`: what a launcher adds, such as the vectorised group's."""
    from trainlab.run.garbage_collection import imports_spared_from_garbage_collection

    with imports_spared_from_garbage_collection():
        from lightning.pytorch.utilities import rank_zero_only

        from trainlab import builders  # noqa: F401  (the data pipelines: Albumentations, scikit-learn)
        from trainlab.run import lifecycle  # noqa: F401
        from trainlab.tracking.wandb_service import start_wandb_service

        # W&B's import, then its service process, started while the run gets ready
        start_wandb_service(cfg, rank_zero_only.rank)
        for module in modules:
            importlib.import_module(module)
