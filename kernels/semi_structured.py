"""2:4 semi-structured sparsity: `semi_structured_linear` runs F.linear with a weight that
keeps 2 nonzeros in every 4 along in_features (reference.prune_2_4) on torch's sparse tensor
cores (to_sparse_semi_structured: CUDA sm80+, fp16/bf16, both dimensions multiples of 64),
else dense F.linear. The compressed weight is cached while the weight is unchanged (same
tensor, same version counter)."""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from ._common import autocast_inputs

_SEMI: dict[int, tuple] = {}


def semi_structured_support(weight: torch.Tensor) -> tuple[bool, str]:
    """(supported, why not) for torch's 2:4 sparse tensor cores on this weight."""
    if not weight.is_cuda:
        return False, "2:4 sparsity needs a CUDA tensor"
    if torch.cuda.get_device_capability(weight.device) < (8, 0):
        return False, "2:4 sparse tensor cores need compute capability 8.0+"
    if weight.dtype not in (torch.float16, torch.bfloat16):
        return False, f"2:4 sparsity needs fp16/bf16, got {weight.dtype}"
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return False, "this torch has no torch.sparse.to_sparse_semi_structured"
    n, k = weight.shape
    if n % 64 or k % 64:
        return False, f"weight {n}x{k}: both dimensions must be multiples of 64"
    return True, ""


def _semi_weight(weight):
    hit = _SEMI.get(id(weight))
    if hit is not None and hit[0]() is weight and hit[1] == weight._version:
        return hit[2]
    sparse = torch.sparse.to_sparse_semi_structured(weight.detach())
    if len(_SEMI) > 256:
        _SEMI.clear()
    _SEMI[id(weight)] = (weakref.ref(weight), weight._version, sparse)
    return sparse


class _SemiStructuredFn(torch.autograd.Function):
    """y = x @ W^T with W held 2:4-compressed; dX dense, dW restricted to W's 2:4 pattern."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        y = F.linear(x2, _semi_weight(weight), bias)
        ctx.save_for_backward(x2, weight)
        ctx.lead, ctx.has_bias = x.shape[:-1], bias is not None
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        dx = (g @ weight).reshape(*ctx.lead, x2.shape[1]) if ctx.needs_input_grad[0] else None
        dw = (g.t() @ x2) * (weight != 0) if ctx.needs_input_grad[1] else None
        dbias = g.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dw, dbias


def semi_structured_linear(x, weight, bias=None):
    """F.linear with a 2:4-sparse weight (2 nonzeros in every 4 along in_features, see
    reference.prune_2_4) on sparse tensor cores where supported, else dense F.linear."""
    ok, _why = semi_structured_support(weight)
    if not ok:
        return F.linear(x, weight, bias)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return _SemiStructuredFn.apply(x, weight, bias)
