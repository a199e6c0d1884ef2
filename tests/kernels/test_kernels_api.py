"""The public API: backend switch, routing, Linear drop-in, import without Triton."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kernels

ROOT = Path(__file__).resolve().parents[2]


def test_default_backend_is_torch_and_switch_validates():
    assert kernels.get_backend() == "torch"
    kernels.set_backend("cpu")
    assert kernels.get_backend() == "cpu"
    with pytest.raises(ValueError, match="torch, triton, cpu"):
        kernels.set_backend("cuda")


def test_torch_backend_is_plain_torch():
    x, w, b = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6)
    assert torch.equal(kernels.linear(x, w, b), F.linear(x, w, b))
    q = k = v = torch.randn(1, 2, 5, 8)
    assert torch.equal(kernels.attention(q, k, v),
                       F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_public_functions_survive_submodule_imports():
    import kernels.attention  # noqa: F401  (binds the submodule on the package...)
    import kernels.matmul     # noqa: F401
    assert callable(kernels.matmul) and callable(kernels.attention)   # ...but not over these
    assert not isinstance(kernels.matmul, type(sys))


def test_triton_backend_on_cpu_without_interpreter_falls_back(monkeypatch):
    from kernels import _triton
    if not _triton.HAS_TRITON:
        pytest.skip("no triton")
    monkeypatch.setattr(_triton, "INTERPRET", False)
    monkeypatch.setitem(kernels._state, "warned", False)
    kernels.set_backend("triton")
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with pytest.warns(RuntimeWarning, match="TRITON_INTERPRET=1"):
        y = kernels.linear(x, w)
    torch.testing.assert_close(y, F.linear(x, w))
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # warned once only
        kernels.linear(x, w)


def test_linear_is_a_drop_in_with_the_same_state_dict():
    torch.manual_seed(0)
    plain = torch.nn.Linear(16, 8)
    ours = kernels.Linear(16, 8)
    ours.load_state_dict(plain.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())
    x = torch.randn(3, 16)
    for backend in ("torch", "cpu"):
        kernels.set_backend(backend)
        torch.testing.assert_close(ours(x), plain(x))


def test_swap_linear_shares_parameters_and_keeps_keys():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Sequential(
        torch.nn.ReLU(), torch.nn.Linear(8, 4, bias=False)))
    keys = list(model.state_dict())
    w0 = model[0].weight
    kernels.swap_linear(model, sparse_block_size=4)
    assert isinstance(model[0], kernels.Linear) and isinstance(model[1][1], kernels.Linear)
    assert model[0].weight is w0 and model[1][1].bias is None
    assert model[1][1].sparse_block_size == 4
    assert list(model.state_dict()) == keys
    kernels.set_backend("cpu")
    model(torch.randn(2, 8)).sum().backward()
    assert w0.grad is not None


def test_autograd_on_every_backend():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 12, generator=g, dtype=torch.float64).float().requires_grad_()
    w = torch.randn(5, 12, generator=g).requires_grad_()
    grads = {}
    for backend in ("torch", "cpu"):
        kernels.set_backend(backend)
        x.grad = w.grad = None
        kernels.matmul(x, w.t(), activation="gelu").square().sum().backward()
        grads[backend] = (x.grad.clone(), w.grad.clone())
    for a, b in zip(grads["torch"], grads["cpu"]):
        torch.testing.assert_close(a, b)


def test_imports_and_runs_without_triton():
    """A broken or missing Triton must leave the torch and cpu backends working."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, kernels\n"
        "kernels.set_backend('cpu')\n"
        "q = torch.randn(1, 2, 9, 16, requires_grad=True)\n"
        "kernels.attention(q, q, q).sum().backward()\n"
        "kernels.block_sparse_linear(torch.randn(3, 32), torch.randn(16, 32), 16)\n"
        "try:\n"
        "    kernels.set_backend('triton')\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "kernel_backend" in proc.stdout
