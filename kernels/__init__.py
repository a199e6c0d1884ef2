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
online-softmax attention, tile-skipping sparse linear). Everything supports autograd. The
triton and cpu routes run as torch custom ops (kernels/ops.py, namespace knlp_kernels), so
torch.compile traces each call as one node, without a graph break.

A leaf package: it imports torch; Triton is imported only by the op modules, guarded (the
torch and cpu backends work where Triton is missing or broken). See docs/kernels.md.
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


_MODULES: dict = {}


def _op(name: str):
    """An op module (kernels.matmul, kernels.attention, kernels.sparse), imported on first use."""
    mod = _MODULES.get(name)
    if mod is None:
        mod = _MODULES[name] = importlib.import_module(f"{__name__}.{name}")
    return mod


def set_backend(name: str) -> None:
    """Select the backend for every call that follows (cfg.kernel_backend)."""
    if name not in BACKENDS:
        raise ValueError(f"kernel backend {name!r}: choose one of {', '.join(BACKENDS)} "
                         "(CONFIG_KERNEL_BACKEND; docs/kernels.md)")
    if name == "triton":
        from . import _triton
        _triton.require("kernel_backend 'triton'")
    if name != "torch":
        _load_routes()
    _state["backend"] = name


def _load_routes() -> None:
    """Import the op modules and register the custom ops (kernels/ops.py) now, in eager
    code, so that torch.compile later traces the entry points without an import."""
    for mod in ("_triton", "ops", "matmul", "attention", "sparse", "block_layout"):
        _op(mod)


def get_backend() -> str:
    return _state["backend"]


def _route(t: torch.Tensor) -> str:
    """Which implementation runs for tensors on t's device under the current backend."""
    backend = _state["backend"]
    if backend != "triton":
        return backend
    if t.device.type == "cuda":
        return "triton"
    _triton = _op("_triton")
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
    return _call("matmul", route, (a, b, bias, activation))


def linear(x, weight, bias=None):
    """F.linear(x, weight, bias): weight [out_features, in_features]."""
    route = _route(x)
    if route == "torch":
        return reference.linear(x, weight, bias)
    return _call("linear", route, (x, weight, bias))


def attention(q, k, v, causal=True, scale=None):
    """Softmax attention over [B, H, T, D] tensors, like
    F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)."""
    route = _route(q)
    if route == "torch":
        return reference.sdpa(q, k, v, causal, scale)
    return _call("attention", route, (q, k, v, causal, scale))


def block_sparse_linear(x, weight, block_size, bias=None):
    """F.linear(x, weight, bias) that skips the all-zero block_size x block_size blocks of
    weight (weights pruned at block granularity, cfg.pruning_block_size)."""
    route = _route(x)
    if route == "torch":
        return reference.block_sparse_linear(x, weight, block_size, bias)
    return _call("block_sparse_linear", route, (x, weight, block_size, bias))


_IMPLS = {  # (op, route) -> (module, function)
    ("matmul", "cpu"): ("matmul", "cpu_matmul"), ("matmul", "triton"): ("matmul", "triton_matmul"),
    ("linear", "cpu"): ("matmul", "cpu_linear"), ("linear", "triton"): ("matmul", "triton_linear"),
    ("attention", "cpu"): ("attention", "cpu_attention"),
    ("attention", "triton"): ("attention", "triton_attention"),
    ("block_sparse_linear", "cpu"): ("sparse", "cpu_block_sparse_linear"),
    ("block_sparse_linear", "triton"): ("sparse", "triton_block_sparse_linear"),
}


def _call(op: str, route: str, args: tuple):
    """The route's entry point (e.g. kernels.matmul.triton_linear): input checks, autocast
    casts and the knlp_kernels custom op (kernels/ops.py), which torch.compile traces as one
    node, no graph break."""
    mod, fn = _IMPLS[(op, route)]
    return getattr(_op(mod), fn)(*args)


class Linear(torch.nn.Linear):
    """Drop-in nn.Linear (same parameters, same state_dict) whose forward calls
    kernels.linear, or the block-sparse op once `sparse_block_size` is set (> 0), the
    backend is not "torch" and sync_block_layouts has found zero tiles in its weight."""

    sparse_block_size: int = 0
    block_active: bool = False      # set by sync_block_layouts

    def forward(self, x):
        if self.block_active and _state["backend"] != "torch":
            return _op("block_layout").module_forward(self, x, _route(x))
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
    (cfg.kernel_linear; with cfg.pruning_block_size as sparse_block_size). Returns module.
    The block-sparse path starts only with sync_block_layouts."""
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


def sync_block_layouts(module: torch.nn.Module, sampled_dw: bool = False) -> dict:
    """(Re)compute the tile layout of every kernels.Linear with sparse_block_size > 0 from
    its weight's zeros, after the masks changed (the pruner calls it when it sets the final
    mask, and after a resume; lib/infer.py after loading weights). A layer with no zero
    tile stays dense (the output head); the others take the block-sparse op, which runs
    its kernels where they pay (kernels/sparse.py). sampled_dw: compute dW only on the
    nonzero tiles (the masks will not change again). Returns {layer name: tile density}."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, Linear) and m.sparse_block_size > 0:
            route = _route(m.weight)
            if route == "torch":
                m.block_active = False
                continue
            _load_routes()
            _op("block_layout").sync_layer(m, route, sampled_dw)
            out[name] = m.block_density
    return out


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
           "Linear", "swap_linear", "sync_block_layouts", "KernelPlanError", "poisoned", "BACKENDS"]
