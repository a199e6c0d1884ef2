"""Block-sparse linear layers: y = x @ W^T visiting only the nonzero b x b blocks of W.

When the pruner zeroes whole blocks of a weight [N, K] (cfg.pruning_block_size = b), a
Layout lists, for every tile-row of W, its nonzero tile-columns (and the same for W^T). The
forward kernel gives each (BLOCK_M rows of x, one tile-row of W) program a loop over that
list only, so 90 percent zero blocks is ~10 percent of the multiply-adds; dX = dY @ W uses
the transposed list. dW = dY^T @ X is dense while the masks still change (movement and
state scores read the gradient of pruned weights); once the final mask is set
(`sampled_dw`), only the nonzero blocks of dW are computed (a block-sampled dense-dense
product: the gradient of a pruned block is never needed again, and it comes back zero).

A layer owns its layout: `kernels.sync_block_layouts(model)` (the pruner calls it when the
final mask is set, lib/build.py) computes it once into the layer's buffers, whose
addresses stay fixed (a later sync copies in place), so a captured CUDA graph stays valid
and nothing is recomputed per call. Routing: a synced layer with no zero tile stays on the
dense path; the others go through knlp_kernels::block_sparse_linear, whose body takes the
block-sparse kernels only where they pay. Which path pays is timed once per (shape, tokens,
density bucket, training or inference) and stored by the autotuner like a plan; untimed
(CPU, KERNELS_AUTOTUNE=0) the rule is density <= SPARSE_BELOW[route].

The tile is the block size rounded up to a power of two in [16, 128] (Triton); blocks of
other sizes still work (a tile is skipped only when all of it is zero). The cpu route runs
an addmm per nonzero tile (views, no copies) on tiles of >= CPU_MIN_TILE.
"""
from __future__ import annotations

import math

import torch

from . import autotune, ops
from ._common import (ELEMENT_BYTES, SUPPORTED_DTYPES, KernelPlanError, autocast_inputs,
                      compile_run, dot_precision, empty, launch_knobs, next_pow2, validate_plan)
from ._triton import HAS_TRITON, require, tl, triton
from .block_layout import (CPU_MIN_TILE, MAX_TILE, Layout, clear_cache,  # noqa: F401 (API)
                           cpu_tile_for, layout, tile_for)

# the untimed routing rule: the block-sparse path at or below this density, else dense
SPARSE_BELOW = {"triton": 0.5, "cpu": 0.6}
DENSITY_STEP = 0.05      # densities are bucketed to this step for routing and plan keys

# forward / dX: (BLOCK_M, num_warps, num_stages); the tile of W (BLOCK_T) is the block's
_PLANS = [(128, 4, 3), (128, 8, 3), (64, 4, 3), (128, 4, 4), (256, 8, 3), (64, 4, 4)]
# sampled dW: (BLOCK_M, SPLIT, num_warps, num_stages); SPLIT slices of the token dimension
_DW_PLANS = [(64, 4, 4, 3), (64, 1, 4, 3), (128, 4, 8, 3), (64, 8, 4, 3), (128, 2, 4, 3),
             (32, 8, 4, 4)]


def smem_bytes(plan: dict, dtype: torch.dtype) -> int:
    """Operand bytes per pipeline stage: x [BLOCK_M, BLOCK_T] and a W tile [BLOCK_T, BLOCK_T]
    (forward, dX), or two [BLOCK_T, BLOCK_M] slices of dY and x (sampled dW, SPLIT plans)."""
    bm, bt = plan["BLOCK_M"], plan["BLOCK_T"]
    second = bm * bt if "SPLIT" in plan else bt * bt
    return (bm * bt + second) * ELEMENT_BYTES[dtype] * plan["num_stages"]


def candidate_plans(M: int, tile: int, dtype: torch.dtype, device: torch.device,
                    dw: bool = False) -> list[dict]:
    small_m = max(16, min(32, next_pow2(M)))
    if device.type != "cuda":
        return [{"BLOCK_M": small_m, "BLOCK_T": tile, "SPLIT": 1, "num_warps": 4,
                 "num_stages": 1} if dw else
                {"BLOCK_M": small_m, "BLOCK_T": tile, "num_warps": 4, "num_stages": 1}]
    plans = []
    for row in (_DW_PLANS if dw else _PLANS):
        bm, w, s = (row[0], row[2], row[3]) if dw else row
        p = {"BLOCK_M": bm, "BLOCK_T": tile, **({"SPLIT": row[1]} if dw else {}),
             "num_warps": w, "num_stages": s}
        if bm > max(16, next_pow2(M)) or (dw and row[1] > -(-M // bm)):
            continue
        try:
            validate_plan("block_sparse", p, (M, tile), smem_bytes(p, dtype), device)
        except KernelPlanError:
            continue
        plans.append(p)
    fallback = {"BLOCK_M": max(16, min(64, next_pow2(M))), "BLOCK_T": tile,
                **({"SPLIT": 1} if dw else {}), "num_warps": 4, "num_stages": 2}
    return plans or [fallback]


def bucket_density(density: float) -> float:
    """density rounded up to DENSITY_STEP (a key for routing and plans)."""
    return round(min(1.0, math.ceil(round(density / DENSITY_STEP, 6)) * DENSITY_STEP), 4)


# --- kernels --------------------------------------------------------------------------------
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

    @triton.jit
    def _sampled_dw_kernel(g_ptr, x_ptr, out_ptr, count_ptr, cols_ptr, M, N, K, kt, m_split,
                           stride_gm, stride_gn, stride_xm, stride_xk, stride_on, stride_ok,
                           stride_cols, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_T: tl.constexpr):
        # dW[n-tile r, k-tile c] = g[:, n-tile]^T @ x[:, k-tile] for the nonzero tiles only:
        # program (r*kt + j, s) takes the j-th listed tile of row r (exits past count[r]) and
        # the s-th slice of the tokens; with SPLIT > 1 it writes an fp32 partial to
        # out [SPLIT, nt, kt, BLOCK_T, BLOCK_T], summed by _sum_splits_kernel
        pid = tl.program_id(0)
        s = tl.program_id(1)
        r = pid // kt
        j = pid % kt
        if j < tl.load(count_ptr + r):
            c = tl.load(cols_ptr + r * stride_cols + j)
            offs_n = r * BLOCK_T + tl.arange(0, BLOCK_T)
            offs_k = c * BLOCK_T + tl.arange(0, BLOCK_T)
            acc = tl.zeros((BLOCK_T, BLOCK_T), dtype=tl.float32)
            m_end = tl.minimum(M, (s + 1) * m_split)
            for m0 in range(s * m_split, m_end, BLOCK_M):
                offs_m = m0 + tl.arange(0, BLOCK_M)
                gt = tl.load(g_ptr + offs_n[:, None] * stride_gn + offs_m[None, :] * stride_gm,
                             mask=(offs_n[:, None] < N) & (offs_m[None, :] < m_end), other=0.0)
                xb = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                             mask=(offs_m[:, None] < m_end) & (offs_k[None, :] < K), other=0.0)
                acc = tl.dot(gt, xb, acc, input_precision=DOT_PRECISION)
            t = tl.arange(0, BLOCK_T)
            if SPLIT == 1:
                tl.store(out_ptr + offs_n[:, None] * stride_on + offs_k[None, :] * stride_ok,
                         acc.to(out_ptr.dtype.element_ty),
                         mask=(offs_n[:, None] < N) & (offs_k[None, :] < K))
            else:
                tl.store(out_ptr + (s * tl.num_programs(0) + pid) * BLOCK_T * BLOCK_T
                         + t[:, None] * BLOCK_T + t[None, :], acc)

    @triton.jit
    def _sum_splits_kernel(part_ptr, out_ptr, count_ptr, cols_ptr, N, K, kt, stride_on,
                           stride_ok, stride_cols, SPLIT: tl.constexpr, BLOCK_T: tl.constexpr):
        pid = tl.program_id(0)
        r = pid // kt
        j = pid % kt
        if j < tl.load(count_ptr + r):
            c = tl.load(cols_ptr + r * stride_cols + j)
            t = tl.arange(0, BLOCK_T)
            acc = tl.zeros((BLOCK_T, BLOCK_T), dtype=tl.float32)
            for s in tl.static_range(SPLIT):
                acc += tl.load(part_ptr + (s * tl.num_programs(0) + pid) * BLOCK_T * BLOCK_T
                               + t[:, None] * BLOCK_T + t[None, :])
            offs_n = r * BLOCK_T + t
            offs_k = c * BLOCK_T + t
            tl.store(out_ptr + offs_n[:, None] * stride_on + offs_k[None, :] * stride_ok,
                     acc.to(out_ptr.dtype.element_ty),
                     mask=(offs_n[:, None] < N) & (offs_k[None, :] < K))


def _check_dtypes(x, b):
    if x.dtype != b.dtype or x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"block_sparse_linear: x is {x.dtype}, weight {b.dtype}; both must be "
                        "one of bfloat16, float16, float32")
    require("the Triton block-sparse matmul")


def _tuned(op, key, candidates, run, device, config, shape, dtype, tile):
    plan = config or autotune.pick(op, key, candidates, run, device)
    validate_plan(op, plan, shape, lambda p: smem_bytes(p, dtype), device,
                  required=("BLOCK_M", "BLOCK_T", "num_warps", "num_stages"))
    if plan["BLOCK_T"] != tile:
        raise KernelPlanError(op, "validate", shape, f"BLOCK_T={plan['BLOCK_T']} must equal "
                              f"the layout tile {tile}", plan)
    return plan


def launch(x: torch.Tensor, b: torch.Tensor, count: torch.Tensor, cols: torch.Tensor,
           tile: int, bias: torch.Tensor | None = None, config: dict | None = None,
           density: float = 1.0):
    """y [M, N] = x [M, K] @ b [K, N], visiting for output tile-column j only the k-tiles
    cols[j, :count[j]]. density: the layout's (a plan key)."""
    M, K = x.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"block_sparse_linear: x is [M, K]=[{M}, {K}] but the weight has "
                         f"in_features={K2}")
    _check_dtypes(x, b)
    if x.stride(-1) != 1 and x.stride(0) != 1:
        x = x.contiguous()
    y = empty((M, N), x.dtype, x.device)
    if M == 0 or N == 0:
        return y
    prec = dot_precision(x.dtype)
    dens = bucket_density(density)
    key = (x.dtype, x.stride(1) == 1, M, N, K, tile, bias is not None, x.device, prec, dens)
    args = (x, b, y, bias if bias is not None else y, count, cols, M, N, K, x.stride(0),
            x.stride(1), b.stride(0), b.stride(1), y.stride(0), y.stride(1), cols.stride(0))
    entry = _LAUNCHES.get(key) if config is None else None
    if entry is not None:
        entry[0](*args, **entry[1])
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

    plan = _tuned("block_sparse", {"dtype": str(x.dtype).replace("torch.", ""), "tile": tile,
                                   "M": autotune.bucket(M), "N": N, "K": K, "density": dens},
                  candidate_plans(M, tile, x.dtype, x.device), run, x.device, config,
                  (M, N, K), x.dtype, tile)
    compile_run("block_sparse", (M, N, K), run, plan)
    if config is None:
        _LAUNCHES[key] = entry_for(plan)
    return y


def launch_sampled_dw(g: torch.Tensor, x: torch.Tensor, count: torch.Tensor,
                      cols: torch.Tensor, tile: int, config: dict | None = None,
                      density: float = 1.0) -> torch.Tensor:
    """dW [N, K] = g [M, N]^T @ x [M, K] on the tiles cols[r, :count[r]] of each tile-row r,
    zero elsewhere, in x's dtype (fp32 accumulation)."""
    M, N = g.shape
    K = x.shape[1]
    _check_dtypes(x, g)
    nt, kt = -(-N // tile), -(-K // tile)
    out = torch.zeros((N, K), dtype=x.dtype, device=x.device)
    if M == 0 or nt == 0 or kt == 0:
        return out
    prec = dot_precision(x.dtype)

    def run(p):
        meta, opts = launch_knobs(p)
        split = p["SPLIT"]
        bm = p["BLOCK_M"]
        m_split = -(-(-(-M // split)) // bm) * bm
        part = out if split == 1 else torch.empty((split, nt * kt, tile, tile),
                                                  dtype=torch.float32, device=x.device)
        _sampled_dw_kernel[(nt * kt, split)](
            g, x, part, count, cols, M, N, K, kt, m_split, g.stride(0), g.stride(1),
            x.stride(0), x.stride(1), out.stride(0), out.stride(1), cols.stride(0),
            DOT_PRECISION=prec, **meta, **opts)
        if split > 1:
            _sum_splits_kernel[(nt * kt,)](part, out, count, cols, N, K, kt, out.stride(0),
                                           out.stride(1), cols.stride(0), SPLIT=split,
                                           BLOCK_T=tile, num_warps=4)

    plan = _tuned("block_sparse_dw", {"dtype": str(x.dtype).replace("torch.", ""),
                                      "tile": tile, "M": autotune.bucket(M), "N": N, "K": K,
                                      "density": bucket_density(density)},
                  candidate_plans(M, tile, x.dtype, x.device, dw=True), run, x.device,
                  config, (M, N, K), x.dtype, tile)
    # the autotuner's timing runs stored into the same listed tiles (stores, never adds),
    # and nothing else: out needs no second zeroing
    compile_run("block_sparse_dw", (M, N, K), run, plan)
    return out


_LAUNCHES: dict = {}   # as in matmul/launcher.py: repeated calls skip plan search, validation


# --- routing --------------------------------------------------------------------------------
def path_for(route, x2, weight, lays, tile, density, train, sampled_dw) -> str:
    """"sparse" or "dense" for this call: timed once per key on a GPU (the autotuner keeps
    the faster, like a plan), else density <= SPARSE_BELOW[route]."""
    dens = bucket_density(density)
    first = "sparse" if dens <= SPARSE_BELOW[route] else "dense"
    if route != "triton" or x2.device.type != "cuda":
        return first
    M, K = x2.shape
    N = weight.shape[0]
    key = {"dtype": str(x2.dtype).replace("torch.", ""), "tile": tile, "M": autotune.bucket(M),
           "N": N, "K": K, "density": dens, "train": train, "sampled_dw": sampled_dw}
    grads = []   # dY for the timing runs, made only when the autotuner times (not per call)

    def run(plan):
        if train and not grads:
            grads.append(torch.ones(M, N, dtype=x2.dtype, device=x2.device))
        g = grads[0] if train else None
        if plan["path"] == "sparse":
            block_sparse_forward(route, x2, weight, None, *lays, tile, density, train,
                                 sampled_dw, path="sparse")
            if train:
                block_sparse_backward(route, g, x2, weight, *lays, tile, density, sampled_dw,
                                      True, True, False, path="sparse")
        else:
            torch.nn.functional.linear(x2, weight)
            if train:
                torch.mm(g, weight), torch.mm(g.t(), x2)

    plans = [{"path": first}, {"path": "dense" if first == "sparse" else "sparse"}]
    return autotune.pick("block_sparse_path", key, plans, run, x2.device)["path"]


# --- the ops' bodies (kernels/ops.py: knlp_kernels::block_sparse_linear and its backward) --
def _tiles(count, cols):
    """(row, col) tile pairs of a layout, on the host (the cpu route)."""
    counts = count.tolist()
    return [(r, c) for r, row in enumerate(cols.tolist()) for c in row[:counts[r]]]


def block_sparse_forward(route, x, weight, bias, count, cols, t_count, t_cols, tile, density,
                         train, sampled_dw, path=None):
    """y = x @ weight^T + bias visiting only the nonzero tile x tile blocks of weight, or
    densely where that is faster (path_for)."""
    x2 = x.reshape(-1, x.shape[-1])
    N = weight.shape[0]
    lays = (count, cols, t_count, t_cols)
    path = path or path_for(route, x2, weight, lays, tile, density, train, sampled_dw)
    if path == "dense":
        y = torch.nn.functional.linear(x2, weight, bias)
    elif route == "triton":
        y = launch(x2, weight.t(), count, cols, tile, bias, density=density)
    else:   # the cpu path: an addmm per nonzero tile (views, no copies)
        y = torch.zeros(x2.shape[0], N, dtype=x.dtype, device=x.device)
        if bias is not None:
            y += bias
        for r, c in _tiles(count, cols):
            n0, k0 = r * tile, c * tile
            y[:, n0:n0 + tile].addmm_(x2[:, k0:k0 + tile], weight[n0:n0 + tile, k0:k0 + tile].t())
    return y.reshape(*x.shape[:-1], N)


def block_sparse_backward(route, grad, x, weight, count, cols, t_count, t_cols, tile, density,
                          sampled_dw, need_x, need_w, need_bias, path=None):
    """(dX, dW, dbias): dX = dY @ W skips the zero tiles; dW = dY^T @ X is dense, or on the
    nonzero tiles only when sampled_dw; dbias in fp32 (triton) or the gradient's dtype
    (cpu). The path is the forward's (the same path_for key)."""
    x2 = x.reshape(-1, x.shape[-1])
    g = grad.reshape(-1, grad.shape[-1]).to(x2.dtype)
    lays = (count, cols, t_count, t_cols)
    path = path or path_for(route, x2, weight, lays, tile, density, True, sampled_dw)
    dx = dw = dbias = None
    if need_x:
        if path == "dense":
            dx = g @ weight
        elif route == "triton":
            dx = launch(g, weight, t_count, t_cols, tile, density=density)
        else:   # contiguous whatever x's strides (the op's fake says so)
            dx = torch.zeros(x2.shape, dtype=x2.dtype, device=x2.device)
            for r, c in _tiles(count, cols):
                n0, k0 = r * tile, c * tile
                dx[:, k0:k0 + tile].addmm_(g[:, n0:n0 + tile], weight[n0:n0 + tile, k0:k0 + tile])
        dx = dx.reshape(x.shape)
    if need_w:
        if path == "dense" or not sampled_dw:
            dw = g.t() @ x2
        elif route == "triton":
            dw = launch_sampled_dw(g, x2, count, cols, tile, density=density)
        else:
            dw = torch.zeros(weight.shape, dtype=x2.dtype, device=x2.device)
            for r, c in _tiles(count, cols):
                n0, k0 = r * tile, c * tile
                dw[n0:n0 + tile, k0:k0 + tile] = g[:, n0:n0 + tile].t() @ x2[:, k0:k0 + tile]
    if need_bias:
        dbias = g.sum(0, dtype=torch.float32) if route == "triton" else g.sum(0)
    return dx, dw, dbias


# --- entry points ---------------------------------------------------------------------------
def _check(x, weight, block_size):
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"block_sparse_linear: x {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)}: x's last dimension must equal in_features")
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (cfg.pruning_block_size)")


def _functional(route, tile, x, weight, block_size, bias):
    _check(x, weight, block_size)
    x, weight, bias = autocast_inputs(x, weight, bias)
    lay = layout(weight, tile)
    return ops.block_sparse_linear(x, weight, bias, *lay.tensors(), tile, lay.density(),
                                   ops.needs_grad(x, weight, bias), False, route)


def triton_block_sparse_linear(x, weight, block_size, bias=None):
    return _functional("triton", tile_for(block_size), x, weight, block_size, bias)


def cpu_block_sparse_linear(x, weight, block_size, bias=None):
    return _functional("cpu", cpu_tile_for(block_size), x, weight, block_size, bias)
