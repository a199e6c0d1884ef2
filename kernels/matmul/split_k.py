"""Split-K matmul (SPLIT_K = S > 1) and wide split-K (WIDE=1), for products with fewer
tiles than SMs or a deep K.

S programs per tile each reduce a contiguous share of the K blocks (split at BLOCK_K
multiples, as evenly as integer division allows; a split with no block stores zeros) into
an fp32 workspace [S, M, N], allocated per call; a second kernel adds the S partials in
slice order 0..S-1 and runs the bias/activation epilogue. No atomics: the result is
bit-identical from call to call (resumed training runs rely on it).

The wide kernel is the same split-K with a tile of 3/2 BLOCK_M x 3/2 BLOCK_N (192x192 for
128x128: cuBLAS's tile for GPT-2's dW products), computed as four dots per K step sharing
its loads (BLOCK_M and BLOCK_M / 2 rows times BLOCK_N and BLOCK_N / 2 columns: Triton's
tiles are powers of two); 242 registers, no spills, no serialized wgmma (ptxas, sm_90).
"""
from __future__ import annotations

import torch

from .._common import empty
from .._triton import HAS_TRITON, tl, triton
from .plans import _tiles, tile_shape
from .tiled import constexprs

# The reduce kernel's own tile, so the sum spreads over many programs even where the
# product has few tiles (256x1000: 64 programs of 32x128, vs 16 tiles of 128x128).
_REDUCE_BLOCK_M, _REDUCE_BLOCK_N = 32, 128

if HAS_TRITON:
    from .._triton import tile_ids
    from .tiled import (_aligned, _epilogue, _known_multiple, _load_bias, _tile_product,
                        _tile_start)

    @triton.jit
    def _split_range(K, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
        # (split, k_lo, k_hi): this program's split (grid axis 1) and its contiguous share
        # [k_lo, k_hi) of the K blocks, dealt out as evenly as integer division allows (with
        # more splits than blocks some get none and store zeros)
        split = tl.program_id(1)
        k_blocks = tl.cdiv(K, BLOCK_K)
        return split, split * k_blocks // SPLIT_K, (split + 1) * k_blocks // SPLIT_K

    @triton.jit
    def _matmul_split_k_kernel(a_ptr, b_ptr, ws_ptr,
                               M, N, K,
                               stride_am, stride_ak, stride_bk, stride_bn,
                               stride_ws, stride_wm,
                               EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                               A_ROW: tl.constexpr, B_ROW: tl.constexpr, DIV: tl.constexpr,
                               SPLIT_K: tl.constexpr):
        # program (tile, split): the fp32 partial product of K blocks [k_lo, k_hi) of one
        # tile (_split_range), stored in workspace slice `split`. The workspace's row stride
        # is N, so DIV holds for it as for C's.
        M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_wm = _aligned(
            M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_wm, A_ROW, B_ROW, DIV)
        split, k_lo, k_hi = _split_range(K, BLOCK_K, SPLIT_K)
        # no bias here (the reduce kernel adds it): HAS_BIAS=False, the pointer is unread
        acc, _, pid_m, pid_n, m0, n0 = _tile_product(
            a_ptr, b_ptr, ws_ptr, tl.program_id(0), k_lo, k_hi, M, N, K, stride_am, stride_ak,
            stride_bk, stride_bn, False, EVEN_K, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
            GROUP_M)

        _store_partial(ws_ptr, split, acc, m0 + tl.arange(0, BLOCK_M),
                       n0 + tl.arange(0, BLOCK_N), pid_m * BLOCK_M, pid_n * BLOCK_N, M, N,
                       stride_ws, stride_wm)

    @triton.jit
    def _store_partial(ws_ptr, split, acc, offs_cm, offs_cn, lo_m, lo_n, M, N, stride_ws,
                       stride_wm):
        # a split's fp32 partial of rows offs_cm x cols offs_cn into workspace slice `split`,
        # masked at the M, N edges and below (lo_m, lo_n) as in _epilogue
        c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
        c_mask = c_mask & (offs_cm[:, None] >= lo_m) & (offs_cn[None, :] >= lo_n)
        # int64 slice offset: S * M * N may pass 2^31 where M * N does not
        ws_ptrs = (ws_ptr + split.to(tl.int64) * stride_ws
                   + offs_cm[:, None] * stride_wm + offs_cn[None, :])
        tl.store(ws_ptrs, acc, mask=c_mask)

    @triton.jit
    def _matmul_split_k_wide_kernel(a_ptr, b_ptr, ws_ptr,
                                    M, N, K,
                                    stride_am, stride_ak, stride_bk, stride_bn,
                                    stride_ws, stride_wm,
                                    EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                                    A_ROW: tl.constexpr, B_ROW: tl.constexpr,
                                    DIV: tl.constexpr, SPLIT_K: tl.constexpr):
        # _matmul_split_k_kernel with a wide tile (WIDE=1): 3/2 BLOCK_M x 3/2 BLOCK_N, as
        # four dots sharing each K step's loads. Rows "lo" are the tile's first BLOCK_M,
        # rows "hi" its last BLOCK_M / 2; columns likewise. Tile placement (grouped order,
        # shifted last tile, wrapped rows/cols in a problem smaller than a tile) as in
        # _tile_product, with the wide tile's size.
        M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_wm = _aligned(
            M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_wm, A_ROW, B_ROW, DIV)
        split, k_lo, k_hi = _split_range(K, BLOCK_K, SPLIT_K)
        pid_m, pid_n = tile_ids(tl.program_id(0), tl.cdiv(M, BLOCK_M * 3 // 2),
                                tl.cdiv(N, BLOCK_N * 3 // 2), GROUP_M)
        m0 = _tile_start(pid_m, BLOCK_M * 3 // 2, M)
        n0 = _tile_start(pid_n, BLOCK_N * 3 // 2, N)
        rows_lo = m0 + tl.arange(0, BLOCK_M)
        rows_hi = m0 + BLOCK_M + tl.arange(0, BLOCK_M // 2)
        cols_lo = n0 + tl.arange(0, BLOCK_N)
        cols_hi = n0 + BLOCK_N + tl.arange(0, BLOCK_N // 2)
        offs_k = tl.arange(0, BLOCK_K)
        first = k_lo * BLOCK_K
        a_lo = a_ptr + (rows_lo % M)[:, None] * stride_am + (first + offs_k[None, :]) * stride_ak
        a_hi = a_ptr + (rows_hi % M)[:, None] * stride_am + (first + offs_k[None, :]) * stride_ak
        b_lo = b_ptr + (first + offs_k[:, None]) * stride_bk + (cols_lo % N)[None, :] * stride_bn
        b_hi = b_ptr + (first + offs_k[:, None]) * stride_bk + (cols_hi % N)[None, :] * stride_bn
        acc_ll = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_lh = tl.zeros((BLOCK_M, BLOCK_N // 2), dtype=tl.float32)
        acc_hl = tl.zeros((BLOCK_M // 2, BLOCK_N), dtype=tl.float32)
        acc_hh = tl.zeros((BLOCK_M // 2, BLOCK_N // 2), dtype=tl.float32)
        for k in range(k_lo, k_hi):
            if EVEN_K:
                al = tl.load(a_lo)
                ah = tl.load(a_hi)
                bl = tl.load(b_lo)
                bh = tl.load(b_hi)
            else:
                in_k = offs_k < K - k * BLOCK_K
                al = tl.load(a_lo, mask=in_k[None, :], other=0.0)
                ah = tl.load(a_hi, mask=in_k[None, :], other=0.0)
                bl = tl.load(b_lo, mask=in_k[:, None], other=0.0)
                bh = tl.load(b_hi, mask=in_k[:, None], other=0.0)
            acc_ll = tl.dot(al, bl, acc_ll, input_precision=DOT_PRECISION)
            acc_lh = tl.dot(al, bh, acc_lh, input_precision=DOT_PRECISION)
            acc_hl = tl.dot(ah, bl, acc_hl, input_precision=DOT_PRECISION)
            acc_hh = tl.dot(ah, bh, acc_hh, input_precision=DOT_PRECISION)
            a_lo += BLOCK_K * stride_ak
            a_hi += BLOCK_K * stride_ak
            b_lo += BLOCK_K * stride_bk
            b_hi += BLOCK_K * stride_bk
        lo_m = pid_m * (BLOCK_M * 3 // 2)
        lo_n = pid_n * (BLOCK_N * 3 // 2)
        _store_partial(ws_ptr, split, acc_ll, rows_lo, cols_lo, lo_m, lo_n, M, N, stride_ws,
                       stride_wm)
        _store_partial(ws_ptr, split, acc_lh, rows_lo, cols_hi, lo_m, lo_n, M, N, stride_ws,
                       stride_wm)
        _store_partial(ws_ptr, split, acc_hl, rows_hi, cols_lo, lo_m, lo_n, M, N, stride_ws,
                       stride_wm)
        _store_partial(ws_ptr, split, acc_hh, rows_hi, cols_hi, lo_m, lo_n, M, N, stride_ws,
                       stride_wm)

    @triton.jit
    def _split_k_reduce_kernel(ws_ptr, c_ptr, bias_ptr, z_ptr,
                               M, N,
                               stride_ws, stride_wm, stride_cm, stride_cn,
                               HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                               STORE_PREACT: tl.constexpr, SPLIT_K: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               DIV: tl.constexpr):
        # C = act(sum of the SPLIT_K partials + bias). Every program adds the slices in the
        # same order 0, 1, ..., SPLIT_K - 1 on every call (no atomics), so C is
        # bit-reproducible run to run, which resumed training runs are tested on.
        N = _known_multiple(N, DIV)
        stride_wm = _known_multiple(stride_wm, DIV)
        stride_cm = _known_multiple(stride_cm, DIV)
        offs_cm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_cn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
        ws_ptrs = ws_ptr + offs_cm[:, None] * stride_wm + offs_cn[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in range(0, SPLIT_K):
            acc += tl.load(ws_ptrs, mask=c_mask, other=0.0)
            ws_ptrs += stride_ws
        _epilogue(acc, _load_bias(bias_ptr, offs_cn, N, HAS_BIAS), c_ptr, z_ptr, offs_cm,
                  offs_cn, 0, 0, M, N, stride_cm, stride_cn, HAS_BIAS, ACTIVATION,
                  STORE_PREACT)



# --- launcher -----------------------------------------------------------------------------
def entry(plan: dict, p):
    """A SPLIT_K > 1 plan's launch-cache entry: a function with the tiled kernel's call
    signature that launches the partial products (the split-K kernel, plain or WIDE=1) into
    a fresh fp32 workspace [S, M, N], then the reduce kernel (ordered sum, bias, activation)
    into C (and Z). The workspace is allocated per call (poisoned like C under verification,
    so an unwritten partial shows). `p`: the launcher's Problem."""
    const, family = constexprs(plan, p)
    epilogue = {k: const.pop(k) for k in p.epilogue}
    split_k = const["SPLIT_K"] = family["SPLIT_K"]
    kernel = _matmul_split_k_wide_kernel if family.get("WIDE") else _matmul_split_k_kernel
    partial = kernel[(_tiles(p.M, p.N, *tile_shape(plan)), split_k)]
    reduce = _split_k_reduce_kernel[(-(-p.M // _REDUCE_BLOCK_M), -(-p.N // _REDUCE_BLOCK_N))]

    def launch_split_k(a, b, c, bias, z, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                       stride_cm, stride_cn):
        ws = empty((split_k, M, N), torch.float32, c.device)
        partial(a, b, ws, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                ws.stride(0), ws.stride(1), **const)
        reduce(ws, c, bias, z, M, N, ws.stride(0), ws.stride(1), stride_cm, stride_cn,
               SPLIT_K=split_k, BLOCK_M=_REDUCE_BLOCK_M, BLOCK_N=_REDUCE_BLOCK_N,
               num_warps=4, DIV=const["DIV"], **epilogue)
    return launch_split_k, {}
