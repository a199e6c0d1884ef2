"""launch(): C = act(A @ B + bias) for 2-D operands of any strides, through the plan family
a plan names: checks, allocation, the plan's pick (plans.candidate_plans, autotune) and
validation on the first call of a problem, then a per-process launch cache.

KERNELS maps each plan family to the module that builds its launch entry (`entry(plan,
problem)`): tests swap one for a mutant copy with monkeypatch.setitem(launcher.KERNELS, ...)
(and an empty _LAUNCHES). Experimental families are named by module path and imported only
when a forced plan asks for them.
"""
from __future__ import annotations

import importlib
import math
from typing import NamedTuple

import torch

from .. import autotune
from .._common import SUPPORTED_DTYPES, KernelPlanError, compile_run, dot_precision, empty
from .._triton import require
from ..reference import activate
from . import split_k, tiled, tma
from .plans import candidate_plans, check_plan, num_sms

ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2}

# plan family -> the module whose entry() launches it
KERNELS: dict = {"tiled": tiled, "split_k": split_k, "tma": tma,
                 "stream_k": "kernels.experimental.stream_k"}


class Problem(NamedTuple):
    """What a family's entry() needs of one problem besides the plan."""
    M: int
    N: int
    K: int
    layout: str        # A's and B's: "r" row-major, "c" column-major ("rc": B column-major)
    div: int           # _divisibility
    epilogue: dict     # HAS_BIAS, ACTIVATION, STORE_PREACT
    precision: str     # tl.dot's input_precision
    sms: int


def family(plan: dict) -> str:
    """The family that runs a plan: its family knob, else the tiled kernel (PERSISTENT
    included)."""
    if plan.get("STREAM_K"):
        return "stream_k"
    if plan.get("SPLIT_K", 1) > 1:
        return "split_k"
    return "tma" if plan.get("TMA") else "tiled"


def kernels_of(name: str):
    mod = KERNELS[name]
    return importlib.import_module(mod) if isinstance(mod, str) else mod


def entry_for(plan: dict, p: Problem):
    """(function, constexprs) launching `plan` with the tiled kernel's call signature."""
    name = family(plan)
    if name == "tma":   # misaligned views fall back to the tiled kernel with BLOCK_M x BLOCK_N
        plain = entry_for({k: v for k, v in plan.items() if k not in ("TMA", "WIDE_M")}, p)
        return kernels_of(name).entry(plan, p, plain)
    return kernels_of(name).entry(plan, p)


def _layout(t: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Row-major ("r") or column-major ("c") view; anything else is copied row-major."""
    if t.stride(-1) == 1:
        return t, "r"
    if t.stride(-2) == 1:
        return t, "c"
    return t.contiguous(), "r"


def _divisibility(a, b, la: str, lb: str, M: int, N: int) -> int:
    """The largest power of two, up to 16, that divides every value the kernels step along
    contiguous memory by (the `DIV` of tiled._aligned): N and C's row stride (N), the
    non-unit stride of A and of B, and M when A is column-major. 16 where all are multiples
    of 16 (Triton's own specialization then says so); a zero stride divides by anything."""
    g = math.gcd(N, a.stride(0) if la == "r" else a.stride(1),
                 b.stride(0) if lb == "r" else b.stride(1))
    if la == "c":
        g = math.gcd(g, M)
    return 16 if g == 0 else min(16, g & -g)


def launch(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None, store_preact: bool = False,
           config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """C = act(a @ b + bias) for 2-D a [M, K] and b [K, N] of any strides.
    Returns (C, Z) with Z the pre-activation when store_preact, else None. config: a forced
    plan (validated; the launch cache is neither read nor written)."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"matmul: the kernel takes 2-D a [M, K] and b [K, N], got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"matmul: a is [M, K]=[{M}, {K}] but b is [K, N]=[{K2}, {N}]: the "
                         "inner dimensions differ")
    if a.dtype != b.dtype or a.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"matmul: a is {a.dtype} and b is {b.dtype}; both must be one of "
                        "bfloat16, float16, float32 (cast them, or run under torch.autocast)")
    if a.device != b.device:
        raise ValueError(f"matmul: a is on {a.device} and b on {b.device}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != N):
        raise ValueError(f"matmul: bias must be [N]=[{N}], got {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"matmul: activation={activation!r}; choose None, 'relu' or 'gelu'")
    require("the Triton matmul")
    c = empty((M, N), a.dtype, a.device)
    z = empty((M, N), a.dtype, a.device) if store_preact else None
    if M == 0 or N == 0:
        return c, z
    if K == 0:  # an empty sum: the epilogue alone
        pre = torch.zeros((M, N), dtype=torch.float32, device=a.device)
        if bias is not None:
            pre = pre + bias.float()
        if z is not None:
            z.copy_(pre)
        c.copy_(activate(pre, activation))
        return c, z

    a, la = _layout(a)
    b, lb = _layout(b)
    prec = dot_precision(a.dtype)
    act = ACTIVATIONS[activation]
    div = _divisibility(a, b, la, lb, M, N)
    key = (a.dtype, la, lb, div, M, N, K, bias is not None, act, z is not None, a.device, prec)
    entry = _LAUNCHES.get(key) if config is None else None
    if entry is None:   # first call for this key: pick, validate, launch (and compile)
        _first_launch(key, a, b, c, bias, z, config)
        return c, z
    fn, const = entry
    fn(a, b, c, bias if bias is not None else c, z if z is not None else c, M, N, K,
       a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1), **const)
    return c, z


# (dtype, layouts, divisibility, M, N, K, epilogue, device, precision) -> (kernel bound to its
# grid, constexprs and launch options): a repeated call skips the plan search, validation
# and grid arithmetic (~0.1 ms of Python per call made GPT-2-sized products CPU-bound).
_LAUNCHES: dict = {}


def _first_launch(key, a, b, c, bias, z, config):
    dtype, la, lb, div, M, N, K, has_bias, act, has_z, device, prec = key
    p = Problem(M, N, K, la + lb, div,
                dict(HAS_BIAS=has_bias, ACTIVATION=act, STORE_PREACT=has_z), prec,
                num_sms(device))

    def run(plan):
        fn, const = entry_for(plan, p)
        fn(a, b, c, bias if bias is not None else c, z if z is not None else c, M, N, K,
           a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
           **const)

    plan = config
    if plan is None:
        plan = autotune.pick(
            "matmul", {"dtype": str(dtype).replace("torch.", ""), "layout": la + lb,
                       "M": autotune.bucket(M), "N": N, "K": K},
            candidate_plans(M, N, K, dtype, device, la + lb), run, device)
    check_plan(plan, (M, N, K), dtype, device, la + lb)
    compile_run("matmul", (M, N, K), run, plan)   # the first launch compiles
    if config is None:
        _LAUNCHES[key] = entry_for(plan, p)
