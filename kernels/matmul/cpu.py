"""The cpu route of kernels.matmul / kernels.linear: torch.addmm (+ activation) forward and
the formulas torch's autograd uses for addmm/mm and gelu/relu backward. On a CPU the vendor
BLAS is the fastest path there is; the Triton kernels run on CPU tensors only under
TRITON_INTERPRET=1 (tests).
"""
from __future__ import annotations

import torch

from .. import ops
from .._common import autocast_inputs
from ..reference import activate


def forward(a2, b, bias, activation, store_preact):
    """(C, Z) of act(a2 @ b + bias) for 2-D a2: one addmm (bias fused by BLAS) and the
    activation; Z, the pre-activation, only with store_preact."""
    y = torch.addmm(bias, a2, b) if bias is not None else a2 @ b
    return activate(y, activation), (y if store_preact else None)


def backward(g, a2, bk, saved, activation, weight_layout, need_a, need_b, need_bias):
    """(dA [M, K], dB, dbias) of act(a2 @ bk + bias) from the gradient g [M, N]; with
    weight_layout dB is written [N, K], shaped like a Linear weight. dbias in g's dtype."""
    da = db = dbias = None
    if activation == "gelu":
        g = torch.ops.aten.gelu_backward(g, saved.reshape(g.shape))
    elif activation == "relu":
        g = torch.ops.aten.threshold_backward(g, saved.reshape(g.shape), 0)
    if need_a:
        da = g.mm(bk.t())
    if need_b:
        db = g.t().mm(a2) if weight_layout else a2.t().mm(g)
    if need_bias:
        dbias = g.sum(0)
    return da, db, dbias


def check_linear(x, weight):
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and weight {tuple(weight.shape)}: "
                         "x's last dimension must equal weight's in_features (dim 1)")


def cpu_matmul(a, b, bias=None, activation=None):
    """The cpu path of kernels.matmul: one addmm (bias fused by BLAS) and the activation."""
    if b.dim() != 2 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: a {tuple(a.shape)} @ b {tuple(b.shape)}: b must be 2-D "
                         "[K, N] with K = a's last dimension")
    a, b, bias = autocast_inputs(a, b, bias)
    return ops.matmul(a, b, bias, activation, "cpu")


def cpu_linear(x, weight, bias=None):
    """The cpu path of kernels.linear: F.linear."""
    check_linear(x, weight)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return ops.linear(x, weight, bias, None, "cpu")
