"""Plain-torch definitions of every kernel: the "torch" backend, and the reference that tests,
verification (kernels/verify.py) and benchmarks (scripts/bench/kernel_ops.py) compare against.

Each function computes in the dtype it is given; verification passes float64 copies
(`upcast`) so the reference is exact to far below any kernel's tolerance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "relu", "gelu")


def activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "gelu":
        return F.gelu(x)  # exact (erf) form, as nn.GELU() and the Triton epilogue
    raise ValueError(f"activation={activation!r}: choose one of {ACTIVATIONS}")


def matmul(a, b, bias=None, activation=None):
    """act(a @ b + bias); a [..., M, K], b [K, N], bias [N]."""
    y = torch.matmul(a, b)
    if bias is not None:
        y = y + bias
    return activate(y, activation)


def linear(x, weight, bias=None):
    return F.linear(x, weight, bias)


def attention(q, k, v, causal=True, scale=None):
    """softmax(q k^T * scale [+ causal mask]) v, written out (O(T^2) memory): the reference.
    The causal mask is top-left aligned (key j visible to query i iff j <= i), as in
    F.scaled_dot_product_attention(is_causal=True)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        keep = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def sdpa(q, k, v, causal=True, scale=None):
    """torch's fused attention (flash / memory-efficient / math, torch picks): the "torch"
    backend and the speed baseline."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def block_sparse_linear(x, weight, block_size, bias=None):
    """Dense F.linear: the zero blocks are multiplied like any other element."""
    return F.linear(x, weight, bias)


# --- helpers for tests, verification and benchmarks --------------------------------------
def upcast(t: torch.Tensor | None, dtype=torch.float64):
    """A float64 leaf copy of t (keeps requires_grad), for the exact reference."""
    if t is None:
        return None
    return t.detach().to(dtype).requires_grad_(t.requires_grad)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN/Inf anywhere gives inf, so NaN never passes."""
    if out.shape != ref.shape:
        raise ValueError(f"shape mismatch: out {tuple(out.shape)} vs ref {tuple(ref.shape)}")
    o = out.detach().to(torch.float64)
    r = ref.detach().to(device=o.device, dtype=torch.float64)
    if not bool(torch.isfinite(o).all()):
        return float("inf")
    num = torch.linalg.vector_norm(o - r).item()
    den = torch.linalg.vector_norm(r).item()
    return num / den if den > 0 else num


def tile_mask(weight: torch.Tensor, tile: int) -> torch.Tensor:
    """[ceil(N/tile), ceil(K/tile)] bool: True where the tile x tile block of weight [N, K]
    holds any nonzero. Edge tiles are zero-padded."""
    n, k = weight.shape
    nb, kb = -(-n // tile), -(-k // tile)
    w = weight.detach()
    if n % tile or k % tile:
        w = F.pad(w, (0, kb * tile - k, 0, nb * tile - n))
    return w.reshape(nb, tile, kb, tile).ne(0).any(dim=3).any(dim=1)


def prune_blocks(weight: torch.Tensor, block_size: int, sparsity: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of weight with round(sparsity * blocks) random block_size x block_size blocks
    zeroed, as the pruner does with cfg.pruning_block_size (for tests and benchmarks)."""
    n, k = weight.shape
    nb, kb = -(-n // block_size), -(-k // block_size)
    total = nb * kb
    drop = int(round(sparsity * total))
    order = torch.randperm(total, generator=generator)
    keep = torch.ones(total, dtype=torch.bool)
    keep[order[:drop]] = False
    mask = keep.reshape(nb, kb).repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)
    return weight * mask[:n, :k].to(weight.device, weight.dtype)


def prune_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude of every 4 consecutive weights along the input dim."""
    n, k = weight.shape
    if k % 4:
        raise ValueError(f"2:4 sparsity needs in_features divisible by 4, got {k}")
    groups = weight.reshape(n, k // 4, 4)
    idx = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return (groups * mask).reshape(n, k)
