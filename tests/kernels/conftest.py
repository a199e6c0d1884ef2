"""tests/kernels: without a GPU, the Triton kernels run in Triton's CPU interpreter.

TRITON_INTERPRET must be set before Triton is first imported (the @triton.jit decorators
read it), so it is set here, at collection, before any test imports kernels' op modules.
"""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device():
    """Where the kernels under test run: the GPU if there is one, else the CPU."""
    return DEVICE


@pytest.fixture
def triton_device():
    """The device for Triton kernels: the GPU, or the CPU through the interpreter; skips
    where neither works (no Triton, or Triton imported before TRITON_INTERPRET was set)."""
    from kernels import _triton
    if not _triton.HAS_TRITON:
        pytest.skip(f"triton does not import: {_triton.IMPORT_ERROR!r}")
    if not (torch.cuda.is_available() or _triton.INTERPRET):
        pytest.skip("no GPU and Triton was imported without TRITON_INTERPRET=1")
    return DEVICE


@pytest.fixture(autouse=True)
def _isolated_kernels(tmp_path, monkeypatch):
    """Each test: backend 'torch' afterwards, a private autotune cache, no tuning unless the
    test turns it on (tests time nothing)."""
    import kernels
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path / "autotune-cache"))
    monkeypatch.setenv("KERNELS_AUTOTUNE", "0")
    yield
    kernels.set_backend("torch")


def _reexport_root_conftest():
    """Test modules elsewhere do `from conftest import PY`, which resolves to whichever
    conftest.py pytest imported last (this one, when tests/ runs as a whole): give them the
    root tests/conftest.py's names too."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    if not path.exists():
        return
    spec = importlib.util.spec_from_file_location("_tests_root_conftest", path)
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    for name, value in vars(root).items():
        if not name.startswith("_") and name not in globals():
            globals()[name] = value


_reexport_root_conftest()
