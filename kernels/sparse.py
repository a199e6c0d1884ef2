"""Sparse-aware linear layers for pruned weights.

Block sparsity: when the pruner zeroes whole b x b blocks of a weight [N, K]
(cfg.pruning_block_size = b), y = x @ W^T only needs the nonzero blocks. A layout pass (one
read of W, no host sync) lists, for every tile-row of W, the nonzero tile-columns; the Triton
kernel then gives each (BLOCK_M rows of x, one tile-row of W) program a loop over that list
only, so 90 percent zero blocks means ~10 percent of the multiply-adds. The backward's
dX = dY @ W uses the transposed list; dW = dY^T @ X stays dense (pruning methods read the
gradient of pruned weights, e.g. movement scores) and runs through kernels' matmul.

The tile is the block size rounded up to a power of two in [16, 128]; blocks of other sizes
still work (a tile is skipped only when all of it is zero).

2:4 semi-structured sparsity: `semi_structured_linear` uses torch's
to_sparse_semi_structured (sparse tensor cores, CUDA sm80+, fp16/bf16) where the GPU and shape
allow, else dense F.linear.

CPU path: torch addmm per nonzero tile (views, no copies), dense fallback above 60 percent
density where the per-tile calls cost more than they save.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from . import autotune, ops
from ._common import (ELEMENT_BYTES, SUPPORTED_DTYPES, KernelPlanError, autocast_inputs,
                      dot_precision, empty, launch_knobs, next_pow2, validate_plan)
from ._triton import HAS_TRITON, require, tl, triton
from .reference import tile_mask

MAX_TILE = 128
CPU_MIN_TILE = 32        # smaller tiles cost more in per-call overhead than they skip
CPU_DENSE_ABOVE = 0.6    # density above which the cpu path multiplies densely

# (BLOCK_M, num_warps, num_stages); the tile of W (BLOCK_T) is fixed by the block size
_PLANS = [(128, 4, 3), (128, 8, 3), (64, 4, 3), (128, 4, 4), (256, 8, 3), (64, 4, 4)]


def tile_for(block_size: int) -> int:
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (cfg.pruning_block_size)")
    return max(16, min(MAX_TILE, next_pow2(block_size)))


def smem_bytes(plan: dict, dtype: torch.dtype) -> int:
    bm, bt = plan["BLOCK_M"], plan["BLOCK_T"]
    return (bm * bt + bt * bt) * ELEMENT_BYTES[dtype] * plan["num_stages"]


def candidate_plans(M: int, tile: int, dtype: torch.dtype, device: torch.device) -> list[dict]:
    if device.type != "cuda":
        return [{"BLOCK_M": max(16, min(32, next_pow2(M))), "BLOCK_T": tile,
                 "num_warps": 4, "num_stages": 1}]
    plans = []
    for bm, w, s in _PLANS:
        p = {"BLOCK_M": bm, "BLOCK_T": tile, "num_warps": w, "num_stages": s}
        if bm > max(16, next_pow2(M)):
            continue
        try:
            validate_plan("block_sparse", p, (M, tile), smem_bytes(p, dtype), device)
        except KernelPlanError:
            continue
        plans.append(p)
    return plans or [{"BLOCK_M": max(16, min(64, next_pow2(M))), "BLOCK_T": tile,
                      "num_warps": 4, "num_stages": 2}]


# --- layout ---------------------------------------------------------------------------------
class Layout:
    """Nonzero tiles of W [N, K]: for tile-row r, `cols[r, :count[r]]` are its nonzero
    tile-columns in ascending order; `t_count`/`t_cols` the same for W^T."""

    def __init__(self, weight: torch.Tensor, tile: int):
        mask = tile_mask(weight, tile)                    # [N/tile, K/tile]
        self.tile = tile
        self.mask = mask
        self.count, self.cols = self._lists(mask)
        self.t_count, self.t_cols = self._lists(mask.t())

    @staticmethod
    def _lists(mask):
        count = mask.sum(dim=1, dtype=torch.int32)
        # a stable sort of "is zero" puts the nonzero columns first, in order, with no sync
        cols = torch.argsort((~mask).to(torch.int8), dim=1, stable=True).to(torch.int32)
        return count, cols.contiguous()

    def density(self) -> float:
        return self.mask.float().mean().item()


_LAYOUTS: dict[int, tuple] = {}


def layout(weight: torch.Tensor, tile: int) -> Layout:
    """The Layout of weight, cached while the weight is unchanged (same tensor, same version
    counter: an optimizer step or a pruning mask applied in place (p.mul_(mask), as
    lib/pruning.py does) bumps the version, so a step recomputes it once). Writes through
    `weight.data` do not bump the version: code that revives zero blocks that way must call
    clear_cache()."""
    key = id(weight)
    hit = _LAYOUTS.get(key)
    if hit is not None:
        ref, version, t, lay = hit
        if ref() is weight and version == weight._version and t == tile:
            return lay
    lay = Layout(weight, tile)
    if len(_LAYOUTS) > 512:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (weakref.ref(weight), weight._version, tile, lay)
    return lay


def clear_cache() -> None:
    """Forget every cached layout (and 2:4 compressed weight)."""
    _LAYOUTS.clear()
    _SEMI.clear()


# --- kernel ---------------------------------------------------------------------------------
if HAS_TRITON:
    @triton.jit
    def _bsmm_kernel(x_ptr, w_ptr, y_ptr, bias_ptr, count_ptr, cols_ptr,
                     M, N, K, stride_xm, stride_xk, stride_wk, stride_wn, stride_ym, stride_yn,
                     stride_cols,
                     HAS_BIAS: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr,
                     EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_T: tl.constexpr):
        # y[m-tile, n-tile] = sum over the nonzero k-tiles of B[:, n-tile] of x[m, k] @ B[k, n]
        # with B [K, N] = W^T given by strides; the list comes from the Layout
        # tile-columns vary fastest: programs running together share rows of x in L2
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_t = tl.arange(0, BLOCK_T)
        count = tl.load(count_ptr + pid_n)
        acc = tl.zeros((BLOCK_M, BLOCK_T), dtype=tl.float32)
        for i in range(0, count):
            k0 = tl.load(cols_ptr + pid_n * stride_cols + i) * BLOCK_T
            offs_k = k0 + offs_t
            x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
            w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
            if EVEN_M and EVEN_K:
                a = tl.load(x_ptrs)
            else:
                a = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
            if EVEN_N and EVEN_K:
                b = tl.load(w_ptrs)
            else:
                b = tl.load(w_ptrs, mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty),
                 mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def launch(x: torch.Tensor, b: torch.Tensor, count: torch.Tensor, cols: torch.Tensor,
           tile: int, bias: torch.Tensor | None = None, config: dict | None = None):
    """y [M, N] = x [M, K] @ b [K, N], visiting for output tile-column j only the k-tiles
    cols[j, :count[j]]."""
    M, K = x.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"block_sparse_linear: x is [M, K]=[{M}, {K}] but the weight has "
                         f"in_features={K2}")
    if x.dtype != b.dtype or x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"block_sparse_linear: x is {x.dtype}, weight {b.dtype}; both must be "
                        "one of bfloat16, float16, float32")
    require("the Triton block-sparse matmul")
    if x.stride(-1) != 1 and x.stride(0) != 1:
        x = x.contiguous()
    y = empty((M, N), x.dtype, x.device)
    if M == 0 or N == 0:
        return y

    prec = dot_precision(x.dtype)
    key = (x.dtype, x.stride(1) == 1, M, N, K, tile, bias is not None, x.device, prec)
    args = (x, b, y, bias if bias is not None else y, count, cols, M, N, K, x.stride(0),
            x.stride(1), b.stride(0), b.stride(1), y.stride(0), y.stride(1), cols.stride(0))
    entry = _LAUNCHES.get(key) if config is None else None
    if entry is not None:
        fn, const = entry
        fn(*args, **const)
        return y

    def entry_for(p):
        meta, opts = launch_knobs(p)
        grid = (-(-N // tile), -(-M // p["BLOCK_M"]))
        return _bsmm_kernel[grid], dict(
            HAS_BIAS=bias is not None, EVEN_M=M % p["BLOCK_M"] == 0, EVEN_N=N % tile == 0,
            EVEN_K=K % tile == 0, DOT_PRECISION=prec, **meta, **opts)

    def run(p):
        fn, const = entry_for(p)
        fn(*args, **const)

    plan = config
    if plan is None:
        plan = autotune.pick(
            "block_sparse", {"dtype": str(x.dtype).replace("torch.", ""), "tile": tile,
                             "M": autotune.bucket(M), "N": N, "K": K},
            candidate_plans(M, tile, x.dtype, x.device), run, x.device)
    validate_plan("block_sparse", plan, (M, N, K), lambda p: smem_bytes(p, x.dtype), x.device,
                  required=("BLOCK_M", "BLOCK_T", "num_warps", "num_stages"))
    if plan["BLOCK_T"] != tile:
        raise KernelPlanError("block_sparse", "validate", (M, N, K),
                              f"BLOCK_T={plan['BLOCK_T']} must equal the layout tile {tile}",
                              plan)
    try:
        run(plan)
    except Exception as exc:
        if type(exc).__module__.startswith("triton"):
            raise KernelPlanError("block_sparse", "compile", (M, N, K),
                                  f"{type(exc).__name__}: {exc}", plan) from exc
        raise
    if config is None:
        _LAUNCHES[key] = entry_for(plan)
    return y


_LAUNCHES: dict = {}   # as in matmul/launcher.py: repeated calls skip plan search, validation


# --- the ops' bodies (kernels/ops.py: knlp_kernels::block_sparse_linear and its backward) --
def block_sparse_forward(route, x, weight, bias, tile):
    """y = x @ weight^T + bias visiting only the nonzero tile x tile blocks of weight."""
    x2 = x.reshape(-1, x.shape[-1])
    N = weight.shape[0]
    if route == "triton":
        lay = layout(weight, tile)
        y = launch(x2, weight.t(), lay.count, lay.cols, tile, bias)
    else:   # the cpu path: an addmm per nonzero tile (views, no copies), dense when dense
        mask = tile_mask(weight, tile).cpu()
        if mask.float().mean().item() > CPU_DENSE_ABOVE:
            y = F.linear(x2, weight, bias)
        else:
            y = torch.zeros(x2.shape[0], N, dtype=x.dtype, device=x.device)
            if bias is not None:
                y += bias
            for r, c in mask.nonzero().tolist():
                n0, k0 = r * tile, c * tile
                w_tile = weight[n0:n0 + tile, k0:k0 + tile]
                y[:, n0:n0 + tile].addmm_(x2[:, k0:k0 + tile], w_tile.t())
    return y.reshape(*x.shape[:-1], N)


def block_sparse_backward(route, grad, x, weight, tile, need_x, need_w, need_bias):
    """(dX, dW, dbias): dX = dY @ W skips the same zero tiles; dW = dY^T @ X stays dense on
    purpose (see the module docstring); dbias in fp32 (triton) or the gradient's dtype (cpu).
    The tile layout / mask is looked up again from the weight (the triton route's layout
    cache hits: same weight, same version), not carried from the forward."""
    x2 = x.reshape(-1, x.shape[-1])
    g = grad.reshape(-1, grad.shape[-1]).to(x2.dtype)
    dx = dw = dbias = None
    if route == "triton":
        if need_x:
            lay = layout(weight, tile)
            dx = launch(g, weight, lay.t_count, lay.t_cols, tile).reshape(x.shape)
        if need_w:
            from .matmul import launch as dense_launch
            dw = dense_launch(g.t(), x2)[0]
        if need_bias:
            dbias = g.float().sum(0)
        return dx, dw, dbias
    if need_x:
        mask = tile_mask(weight, tile).cpu()
        if mask.float().mean().item() > CPU_DENSE_ABOVE:
            dx = g @ weight
        else:   # contiguous whatever x's strides (the op's fake says so)
            dx = torch.zeros(x2.shape, dtype=x2.dtype, device=x2.device)
            for r, c in mask.nonzero().tolist():
                n0, k0 = r * tile, c * tile
                w_tile = weight[n0:n0 + tile, k0:k0 + tile]
                dx[:, k0:k0 + tile].addmm_(g[:, n0:n0 + tile], w_tile)
        dx = dx.reshape(x.shape)
    if need_w:
        dw = g.t() @ x2
    if need_bias:
        dbias = g.sum(0)
    return dx, dw, dbias


def _check(x, weight, block_size):
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"block_sparse_linear: x {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)}: x's last dimension must equal in_features")
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (cfg.pruning_block_size)")


def triton_block_sparse_linear(x, weight, block_size, bias=None):
    _check(x, weight, block_size)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return ops.block_sparse_linear(x, weight, bias, tile_for(block_size), "triton")


def cpu_block_sparse_linear(x, weight, block_size, bias=None):
    _check(x, weight, block_size)
    x, weight, bias = autocast_inputs(x, weight, bias)
    tile = block_size * max(1, -(-CPU_MIN_TILE // block_size))
    return ops.block_sparse_linear(x, weight, bias, tile, "cpu")


# --- 2:4 semi-structured --------------------------------------------------------------------
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
