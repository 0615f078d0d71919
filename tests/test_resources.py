"""What a job asks of the machine: CUDA availability checks that cost nothing without a GPU."""

from __future__ import annotations

import lightning.pytorch  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import)
import pytest
import torch

from trainlab.run.resources import NVML_CUDA_CHECK, cheap_cuda_checks_without_gpus


def test_lightning_asks_nvml_and_without_gpus_the_runtime_answers_again(monkeypatch):
    monkeypatch.setenv(NVML_CUDA_CHECK, "1")  # as Lightning leaves it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cheap_cuda_checks_without_gpus()
    assert torch.cuda._nvml_based_avail() is False  # torch reads the variable at every check


def test_with_a_gpu_the_nvml_check_stays(monkeypatch):
    monkeypatch.setenv(NVML_CUDA_CHECK, "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cheap_cuda_checks_without_gpus()
    assert torch.cuda._nvml_based_avail() is True  # CUDA stays uninitialised: fork-safe


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_training_run_without_gpus_leaves_the_cheap_check(make_cfg, monkeypatch):
    from trainlab.train import train

    monkeypatch.setenv(NVML_CUDA_CHECK, "1")
    summary = train(make_cfg("data=digits", "model=mlp", "logger=csv", "trainer.max_steps=2", "test=false"))
    assert summary["status"] == "completed"
    assert torch.cuda._nvml_based_avail() is False and torch.cuda.is_available() is False
