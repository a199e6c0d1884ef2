"""The bodies of knlp_kernels::matmul, ::linear and ::matmul_backward (kernels/ops.py
registers them, with their autograd formulas), and the triton route's entry points.

The backward runs the forward's kernel twice: dA = dZ @ B^T and dB = A^T @ dZ (dW = dZ^T @ X
for a Linear weight, written directly as [N, K]), with dZ = dC * act'(Z) from a small fused
elementwise kernel (_act_grad_kernel); transposed operands are views, never copies.
"""
from __future__ import annotations

import torch

from .. import ops
from .._common import autocast_inputs, empty
from .._triton import HAS_TRITON, tl, triton
from . import cpu
from .launcher import ACTIVATIONS, launch
from .weights import weight_as_is, weight_kn

if HAS_TRITON:
    @triton.jit
    def _act_grad_kernel(g_ptr, s_ptr, out_ptr, n, ACTIVATION: tl.constexpr,
                         BLOCK: tl.constexpr):
        # dZ = dC * act'(.): relu reads its output C, gelu its pre-activation Z
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if ACTIVATION == 1:
            d = tl.where(s > 0.0, g, 0.0)
        else:
            cdf = 0.5 * (1.0 + tl.math.erf(s * 0.7071067811865476))
            pdf = tl.exp(-0.5 * s * s) * 0.3989422804014327
            d = g * (cdf + s * pdf)
        tl.store(out_ptr + offs, d.to(out_ptr.dtype.element_ty), mask=mask)


def _act_grad(g: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    out = empty(g.shape, g.dtype, g.device)
    n = g.numel()
    block = 1024 if g.device.type == "cuda" else 256
    _act_grad_kernel[(-(-n // block),)](g, saved, out, n, ACTIVATION=ACTIVATIONS[activation],
                                        BLOCK=block)
    return out


# --- the ops' bodies ----------------------------------------------------------------------
def matmul_forward(route, a, b, bias, activation, store_preact):
    """(C, Z) = (act(a @ b + bias), the pre-activation or None) for a [..., M, K], b [K, N].
    Z is stored only for gelu with store_preact (its backward needs it; relu's reads C)."""
    K, N = b.shape
    lead = a.shape[:-1]
    a2 = a.reshape(-1, K)
    store_preact = store_preact and activation == "gelu"
    if route == "triton":
        c, z = launch(a2, b, bias, activation, store_preact=store_preact)
    else:
        c, z = cpu.forward(a2, b, bias, activation, store_preact)
    return c.reshape(*lead, N), (z.reshape(*lead, N) if z is not None else None)


def linear_forward(route, x, weight, bias, weight_kn):
    """F.linear(x, weight, bias); the triton route multiplies by weight_kn, the weight's
    row-major [K, N] copy (weights.weight_kn), or by the weight as is when given None
    (weights.weight_as_is)."""
    if route == "triton":
        b = weight_kn if weight_kn is not None else weight.t()
        c, _ = launch(x.reshape(-1, x.shape[-1]), b, bias)
        return c.reshape(*x.shape[:-1], weight.shape[0])
    return torch.nn.functional.linear(x, weight, bias)


def matmul_backward(route, grad, a, b, saved, activation, weight_layout, need_a, need_b,
                    need_bias):
    """(dA, dB, dbias) of act(a @ b + bias); with weight_layout b is a Linear weight [N, K]
    used as b.t() (its gradient is written [N, K] directly, shaped like the parameter).
    saved: gelu's pre-activation Z or relu's output C. dbias is returned unsummed-to-dtype:
    fp32 on the triton route, the gradient's dtype on the cpu route."""
    lead, K = a.shape[:-1], a.shape[-1]
    a2 = a.reshape(-1, K)
    g = grad.reshape(-1, grad.shape[-1]).to(a2.dtype)
    bk = b.t() if weight_layout else b                      # the [K, N] operand
    if route != "triton":
        da, db, dbias = cpu.backward(g, a2, bk, saved, activation, weight_layout, need_a,
                                     need_b, need_bias)
        return (da.reshape(*lead, K) if da is not None else None), db, dbias
    da = db = dbias = None
    if activation is not None:
        g = _act_grad(g.contiguous(), saved, activation)
    if need_a:
        da = launch(g, bk.t())[0].reshape(*lead, K)
    if need_b:
        db = launch(g.t(), a2)[0] if weight_layout else launch(a2.t(), g)[0]
    if need_bias:
        # fp32 accumulation without an fp32 copy of g (g.float() was 151 MB at GPT-2's
        # 16384 x 2304): on CUDA, sum(dtype=float32) reads bf16/fp16 and accumulates in
        # fp32 in one pass
        dbias = g.sum(0, dtype=torch.float32)
    return da, db, dbias


# --- the triton route's entry points (kernels.matmul / kernels.linear pick one) ------------
def triton_matmul(a, b, bias=None, activation=None):
    """The Triton path of kernels.matmul: a [..., M, K] @ b [K, N] (+ bias [N]), activation."""
    if b.dim() != 2:
        raise ValueError(f"matmul: b must be 2-D [K, N], got {tuple(b.shape)}; for a batched b "
                         "use torch.matmul")
    if a.dim() < 1 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: a {tuple(a.shape)} @ b {tuple(b.shape)}: a's last "
                         "dimension must equal b's first")
    a, b, bias = autocast_inputs(a, b, bias)
    return ops.matmul(a, b, bias, activation, "triton")


def triton_linear(x, weight, bias=None):
    """The Triton path of kernels.linear: F.linear semantics, weight [out, in]."""
    cpu.check_linear(x, weight)
    param = weight
    x, weight, bias = autocast_inputs(x, weight, bias)
    if torch.compiler.is_compiling():
        # a traced copy: inductor fuses it with the autocast cast (no Python cache here)
        w_kn = param.detach().t().to(dtype=weight.dtype, memory_format=torch.contiguous_format)
    else:
        cache = not ops.needs_grad(x, weight, bias)
        as_is = weight_as_is(x.numel() // max(1, x.shape[-1]), weight.shape[0],
                             weight.shape[1], weight.dtype, weight.device, copy_cached=cache)
        w_kn = None if as_is else weight_kn(param, weight.dtype, cache=cache)
    return ops.linear(x, weight, bias, w_kn, "triton")
