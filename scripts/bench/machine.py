"""What a measurement ran on, for the rows and headers of the bench tools' reports: the
device's name and the torch, triton and CUDA versions (each benchmark row carries them)."""
from __future__ import annotations

import os

import torch


def versions() -> dict:
    """torch, triton and CUDA versions; triton None where it does not import (CPU wheels),
    CUDA None on a CPU-only torch build."""
    try:
        import triton
        triton_version = triton.__version__
    except Exception:   # missing or broken install: the CPU benchmarks still run
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda}


def device_name(cuda: bool) -> str:
    """The current GPU's name, or on the CPU "cpu (<n> cores)"."""
    return torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)"
