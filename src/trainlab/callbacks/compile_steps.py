"""Tell torch.compile's CUDA graphs where each step begins, for `compile_mode=reduce-overhead` and
`max-autotune`: the compiled network's graphs are replayed from static buffers, and a new step
marks the previous step's outputs as done with (torch.compiler.cudagraph_mark_step_begin)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

# torch.compile modes that capture CUDA graphs (torch._inductor.list_mode_options: triton.cudagraphs)
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


class CudaGraphSteps(pl.Callback):
    """Marks the start of every training, validation and test step for CUDA graph trees."""

    def on_train_batch_start(self, *args, **kwargs) -> None:
        torch.compiler.cudagraph_mark_step_begin()

    def on_validation_batch_start(self, *args, **kwargs) -> None:
        torch.compiler.cudagraph_mark_step_begin()

    def on_test_batch_start(self, *args, **kwargs) -> None:
        torch.compiler.cudagraph_mark_step_begin()
