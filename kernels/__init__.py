"""kernels: Triton kernels (matmul, flash attention, block-sparse linear) behind one switch.

    import kernels
    kernels.set_backend("triton")          # "torch" (reference) | "triton" | "cpu"
    y = kernels.linear(x, weight, bias)    # F.linear semantics
    y = kernels.matmul(a, b, bias=None, activation="gelu")
    o = kernels.attention(q, k, v, causal=True)            # [B, H, T, D]
    y = kernels.block_sparse_linear(x, weight, block_size)  # skips zero b x b blocks

Backends: "torch" runs plain torch ops (kernels/reference.py); "triton" runs the Triton
kernels on CUDA tensors, and on CPU tensors either under TRITON_INTERPRET=1 (CI) or, without
it, falls back to the "cpu" path with a one-time warning; "cpu" runs the CPU paths (blocked
online-softmax attention, tile-skipping sparse linear). Everything supports autograd.

A leaf package: it imports torch, and Triton only when the triton backend runs. See
docs/kernels.md.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
import warnings

import torch

from . import reference
from ._common import KernelPlanError, poisoned

BACKENDS = ("torch", "triton", "cpu")
_state = {"backend": os.environ.get("KERNELS_BACKEND", "torch"), "warned": False}
if _state["backend"] not in BACKENDS:
    raise ValueError(f"KERNELS_BACKEND={_state['backend']!r}: choose one of {', '.join(BACKENDS)}")


def _op(name: str):
    """Import an op module (kernels.matmul, kernels.attention, kernels.sparse) on first use."""
    return importlib.import_module(f"{__name__}.{name}")


def set_backend(name: str) -> None:
    """Select the backend for every call that follows (cfg.kernel_backend)."""
    if name not in BACKENDS:
        raise ValueError(f"kernel backend {name!r}: choose one of {', '.join(BACKENDS)} "
                         "(CONFIG_KERNEL_BACKEND; docs/kernels.md)")
    if name == "triton":
        from . import _triton
        _triton.require("kernel_backend 'triton'")
    if name != "torch":
        _exclude_from_compile()
    _state["backend"] = name


def _exclude_from_compile() -> None:
    """Under torch.compile, run the Triton/cpu paths eagerly (a clean graph break) instead of
    letting dynamo trace the launchers. Done here, not with a decorator at import, because
    torch.compiler.disable imports dynamo, which imports Triton (1.6 s on the 2-core CI host,
    and before a test could set TRITON_INTERPRET)."""
    module = sys.modules[__name__]
    for name in ("matmul", "linear", "attention", "block_sparse_linear"):
        fn = module.__dict__[name]
        if getattr(fn, "_kernels_eager", False):
            continue
        try:
            wrapped = torch.compiler.disable(fn)
        except Exception:   # a torch without a working dynamo: nothing to exclude from
            return
        wrapped._kernels_eager = True
        setattr(module, name, wrapped)


def get_backend() -> str:
    return _state["backend"]


def _route(t: torch.Tensor) -> str:
    """Which implementation runs for tensors on t's device under the current backend."""
    backend = _state["backend"]
    if backend != "triton":
        return backend
    if t.device.type == "cuda":
        return "triton"
    from . import _triton
    if _triton.INTERPRET and _triton.HAS_TRITON and t.device.type == "cpu":
        return "triton"
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"kernels: backend 'triton' got {t.device.type} tensors; running the cpu "
                      "path instead (set TRITON_INTERPRET=1 before importing triton to run the "
                      "Triton kernels in its CPU interpreter)", RuntimeWarning, stacklevel=3)
    return "cpu"


def matmul(a, b, bias=None, activation=None):
    """act(a @ b + bias): a [..., M, K], b [K, N], bias [N]; activation None|"relu"|"gelu"
    (exact erf gelu, as nn.GELU())."""
    if activation not in reference.ACTIVATIONS:
        raise ValueError(f"matmul: activation={activation!r}; choose None, 'relu' or 'gelu'")
    route = _route(a)
    if route == "torch":
        return reference.matmul(a, b, bias, activation)
    if route == "cpu":
        return _op("matmul").cpu_matmul(a, b, bias, activation)
    return _op("matmul").triton_matmul(a, b, bias, activation)


def linear(x, weight, bias=None):
    """F.linear(x, weight, bias): weight [out_features, in_features]."""
    route = _route(x)
    if route == "torch":
        return reference.linear(x, weight, bias)
    if route == "cpu":
        return _op("matmul").cpu_linear(x, weight, bias)
    return _op("matmul").triton_linear(x, weight, bias)


def attention(q, k, v, causal=True, scale=None):
    """Softmax attention over [B, H, T, D] tensors, like
    F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)."""
    route = _route(q)
    if route == "torch":
        return reference.sdpa(q, k, v, causal, scale)
    if route == "cpu":
        return _op("attention").cpu_attention(q, k, v, causal, scale)
    return _op("attention").triton_attention(q, k, v, causal, scale)


def block_sparse_linear(x, weight, block_size, bias=None):
    """F.linear(x, weight, bias) that skips the all-zero block_size x block_size blocks of
    weight (weights pruned at block granularity, cfg.pruning_block_size)."""
    route = _route(x)
    if route == "torch":
        return reference.block_sparse_linear(x, weight, block_size, bias)
    if route == "cpu":
        return _op("sparse").cpu_block_sparse_linear(x, weight, block_size, bias)
    return _op("sparse").triton_block_sparse_linear(x, weight, block_size, bias)


class Linear(torch.nn.Linear):
    """Drop-in nn.Linear (same parameters, same state_dict) whose forward calls
    kernels.linear, or kernels.block_sparse_linear once `sparse_block_size` is set (> 0) and
    the backend is not "torch"."""

    sparse_block_size: int = 0

    def forward(self, x):
        if self.sparse_block_size > 0 and _state["backend"] != "torch":
            return block_sparse_linear(x, self.weight, self.sparse_block_size, self.bias)
        return linear(x, self.weight, self.bias)

    @classmethod
    def from_linear(cls, m: torch.nn.Linear) -> "Linear":
        """A kernels.Linear sharing m's parameters (no copy)."""
        new = cls.__new__(cls)
        torch.nn.Module.__init__(new)
        new.in_features, new.out_features = m.in_features, m.out_features
        new.weight = m.weight
        new.bias = m.bias
        new.train(m.training)
        return new


def swap_linear(module: torch.nn.Module, sparse_block_size: int = 0) -> torch.nn.Module:
    """Replace every nn.Linear inside module by a kernels.Linear sharing its parameters
    (cfg.kernel_linear; with cfg.pruning_block_size as sparse_block_size). Returns module."""
    for name, child in list(module.named_children()):
        if type(child) is torch.nn.Linear:
            new = Linear.from_linear(child)
            new.sparse_block_size = sparse_block_size
            setattr(module, name, new)
        elif isinstance(child, Linear):
            child.sparse_block_size = sparse_block_size
        else:
            swap_linear(child, sparse_block_size)
    return module


class _Package(types.ModuleType):
    """`import kernels.matmul` binds the submodule as an attribute of the package, which
    would hide the public function of the same name (kernels.matmul, kernels.attention).
    Keep the function; the submodule stays reachable through sys.modules / `from kernels.matmul
    import ...`."""

    def __setattr__(self, name, value):
        current = self.__dict__.get(name)
        if isinstance(value, types.ModuleType) and callable(current) \
                and not isinstance(current, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["set_backend", "get_backend", "matmul", "linear", "attention", "block_sparse_linear",
           "Linear", "swap_linear", "KernelPlanError", "poisoned", "BACKENDS"]
