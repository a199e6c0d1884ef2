"""The tiled matmul kernel C = act(A @ B + bias) (Triton tutorial 03), its persistent
variant (PERSISTENT=1, tutorial 09), and the tile helpers the other families share.

One program per BLOCK_M x BLOCK_N tile of C in grouped launch order (GROUP_M tile-rows share
B tiles in L2), fp32 accumulation over BLOCK_K steps, bias and activation (relu, exact-erf
gelu) in the fp32 epilogue. A and B may have any strides (a transposed view costs no copy).
Any M, N, K: a partial last tile moves back to end at the edge (_tile_start) and stores only
its own rows/cols; in a problem smaller than a tile, rows/cols past the edge wrap round
(`% M`) on load and are masked on store; K is masked unless it divides by BLOCK_K (EVEN_K).
Sizes and strides that are not multiples of 16 get their power-of-two divisor passed as DIV
(launcher._divisibility, _aligned here), so loads along them stay vectorized.

The persistent kernel runs one program per SM over the same tiles, the tile loop flattened
with the K loop so the next tile's loads overlap this tile's epilogue.
"""
from __future__ import annotations

from .._common import launch_knobs
from .._triton import HAS_TRITON, tl, triton
from .plans import FAMILY_KNOBS, _tiles

if HAS_TRITON:
    from .._triton import apply_activation, tile_ids

    @triton.jit
    def _known_multiple(x, DIV: tl.constexpr):
        # x, which the launcher checked is a multiple of DIV, written so that Triton's
        # alignment analysis knows it: (x // DIV) * DIV is x. Triton specializes an int
        # argument on divisibility by 16 only, so N = 1000 (resnet50's fc) read as unaligned
        # and its loads went scalar (59 -> 9 us on the H200 with DIV = 8). DIV 1 (nothing to
        # say) and 16 (Triton's own) leave x as it is.
        if DIV > 1 and DIV < 16:
            x = x // DIV * DIV
        return x

    @triton.jit
    def _aligned(M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
                 A_ROW: tl.constexpr, B_ROW: tl.constexpr, DIV: tl.constexpr):
        # the values the tile loads and stores step by, with DIV made known: C's N and row
        # stride, A's and B's non-unit strides, and M when A is column-major (its rows are
        # then the contiguous, `% M`-wrapped direction)
        N = _known_multiple(N, DIV)
        stride_cm = _known_multiple(stride_cm, DIV)
        if A_ROW:
            stride_am = _known_multiple(stride_am, DIV)
        else:
            M = _known_multiple(M, DIV)
            stride_ak = _known_multiple(stride_ak, DIV)
        if B_ROW:
            stride_bk = _known_multiple(stride_bk, DIV)
        else:
            stride_bn = _known_multiple(stride_bn, DIV)
        return M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm

    @triton.jit
    def _dot_blocks(a_ptr, b_ptr, offs_am, offs_bn, K, k_lo, k_hi,
                    stride_am, stride_ak, stride_bk, stride_bn,
                    EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # fp32 sum over K blocks [k_lo, k_hi) of A[offs_am, :] @ B[:, offs_bn]; the K edge
        # is masked unless K divides by BLOCK_K
        offs_k = tl.arange(0, BLOCK_K)
        first = k_lo * BLOCK_K
        a_ptrs = a_ptr + offs_am[:, None] * stride_am + (first + offs_k[None, :]) * stride_ak
        b_ptrs = b_ptr + (first + offs_k[:, None]) * stride_bk + offs_bn[None, :] * stride_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_lo, k_hi):
            if EVEN_K:
                a = tl.load(a_ptrs)
                b = tl.load(b_ptrs)
            else:
                a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BLOCK_K, other=0.0)
                b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_K, other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
        return acc

    @triton.jit
    def _tile_start(pid, BLOCK: tl.constexpr, size):
        # the first row (col) of tile `pid`: pid * BLOCK, except that a partial last tile
        # moves back to end at `size` (where size >= BLOCK), so it loads BLOCK rows (cols) in
        # bounds and in order instead of wrapping round to the start: a one-wave kernel takes
        # its slowest tile's time, and the wrapped one was slowest (resnet50's fc, 64x64
        # tiles: 10.1 -> 8.3 us). The rows (cols) it shares with the tile before are computed
        # twice and stored once (the epilogue masks below pid * BLOCK).
        return tl.maximum(tl.minimum(pid * BLOCK, size - BLOCK), 0)

    @triton.jit
    def _load_bias(bias_ptr, offs_cn, N, HAS_BIAS: tl.constexpr):
        # the bias of columns offs_cn in fp32 (zeros without one), for _epilogue. Loaded
        # before the K loop, whose latency hides the load's (in the epilogue it added 1.6 us
        # to resnet50's fc as a Linear)
        if HAS_BIAS:
            return tl.load(bias_ptr + offs_cn, mask=offs_cn < N, other=0.0).to(tl.float32)
        else:
            return tl.zeros(offs_cn.shape, dtype=tl.float32)

    @triton.jit
    def _epilogue(acc, bias, c_ptr, z_ptr, offs_cm, offs_cn, lo_m, lo_n, M, N,
                  stride_cm, stride_cn, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                  STORE_PREACT: tl.constexpr):
        # C = act(acc + bias), stored masked at the M, N edges and below (lo_m, lo_n), where
        # a shifted last tile (_tile_start) overlaps the tile before (and Z = acc + bias);
        # bias from _load_bias
        c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
        c_mask = c_mask & (offs_cm[:, None] >= lo_m) & (offs_cn[None, :] >= lo_n)
        c_offs = offs_cm[:, None] * stride_cm + offs_cn[None, :] * stride_cn
        if HAS_BIAS:
            acc = acc + bias[None, :]
        if STORE_PREACT:  # gelu's backward needs the pre-activation
            tl.store(z_ptr + c_offs, acc.to(z_ptr.dtype.element_ty), mask=c_mask)
        acc = apply_activation(acc, ACTIVATION)
        tl.store(c_ptr + c_offs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)

    @triton.jit
    def _tile_product(a_ptr, b_ptr, bias_ptr, tile, k_lo, k_hi, M, N, K,
                      stride_am, stride_ak, stride_bk, stride_bn, HAS_BIAS: tl.constexpr,
                      EVEN_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
        # one tile's fp32 product over K blocks [k_lo, k_hi): tile `tile` in grouped order,
        # its rows/cols from _tile_start (in a problem smaller than the tile, rows/cols past
        # the edge wrap round: loads stay in bounds without masks, the store masks them),
        # its bias loaded before the K loop (_load_bias), and its coordinates for the store
        pid_m, pid_n = tile_ids(tile, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
        m0 = _tile_start(pid_m, BLOCK_M, M)
        n0 = _tile_start(pid_n, BLOCK_N, N)
        bias = _load_bias(bias_ptr, n0 + tl.arange(0, BLOCK_N), N, HAS_BIAS)
        acc = _dot_blocks(a_ptr, b_ptr, (m0 + tl.arange(0, BLOCK_M)) % M,
                          (n0 + tl.arange(0, BLOCK_N)) % N, K, k_lo, k_hi,
                          stride_am, stride_ak, stride_bk, stride_bn,
                          EVEN_K, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        return acc, bias, pid_m, pid_n, m0, n0

    @triton.jit
    def _matmul_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, z_ptr,
                       M, N, K,
                       stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                       HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                       STORE_PREACT: tl.constexpr, EVEN_K: tl.constexpr,
                       DOT_PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, A_ROW: tl.constexpr, B_ROW: tl.constexpr,
                       DIV: tl.constexpr):
        # one program per tile of C, in grouped launch order
        M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm = _aligned(
            M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, A_ROW, B_ROW, DIV)
        acc, bias, pid_m, pid_n, m0, n0 = _tile_product(
            a_ptr, b_ptr, bias_ptr, tl.program_id(0), 0, tl.cdiv(K, BLOCK_K), M, N, K,
            stride_am, stride_ak, stride_bk, stride_bn, HAS_BIAS, EVEN_K, DOT_PRECISION,
            BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
        _epilogue(acc, bias, c_ptr, z_ptr, m0 + tl.arange(0, BLOCK_M),
                  n0 + tl.arange(0, BLOCK_N), pid_m * BLOCK_M, pid_n * BLOCK_N, M, N,
                  stride_cm, stride_cn, HAS_BIAS, ACTIVATION, STORE_PREACT)

    @triton.jit
    def _matmul_persistent_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, z_ptr,
                                  M, N, K,
                                  stride_am, stride_ak, stride_bk, stride_bn,
                                  stride_cm, stride_cn,
                                  HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                                  STORE_PREACT: tl.constexpr, EVEN_K: tl.constexpr,
                                  DOT_PRECISION: tl.constexpr,
                                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                  BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                                  A_ROW: tl.constexpr, B_ROW: tl.constexpr,
                                  DIV: tl.constexpr, NUM_SMS: tl.constexpr):
        # one program per SM; tiles in the same grouped order as _matmul_kernel. The tile
        # loop is flattened with the K loop so the pipeline runs across tile boundaries.
        M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm = _aligned(
            M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, A_ROW, B_ROW, DIV)
        start_pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        k_tiles = tl.cdiv(K, BLOCK_K)
        num_tiles = num_pid_m * num_pid_n
        offs_k0 = tl.arange(0, BLOCK_K)
        for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=True):
            pid_m, pid_n = tile_ids(tile_id, num_pid_m, num_pid_n, GROUP_M)
            m0 = _tile_start(pid_m, BLOCK_M, M)
            n0 = _tile_start(pid_n, BLOCK_N, N)
            offs_am = (m0 + tl.arange(0, BLOCK_M)) % M
            offs_bn = (n0 + tl.arange(0, BLOCK_N)) % N
            bias = _load_bias(bias_ptr, n0 + tl.arange(0, BLOCK_N), N, HAS_BIAS)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for ki in range(0, k_tiles):
                offs_k = ki * BLOCK_K + offs_k0
                a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
                b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn
                if EVEN_K:
                    a = tl.load(a_ptrs)
                    b = tl.load(b_ptrs)
                else:
                    a = tl.load(a_ptrs, mask=offs_k[None, :] < K, other=0.0)
                    b = tl.load(b_ptrs, mask=offs_k[:, None] < K, other=0.0)
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            _epilogue(acc, bias, c_ptr, z_ptr, m0 + tl.arange(0, BLOCK_M),
                      n0 + tl.arange(0, BLOCK_N), pid_m * BLOCK_M, pid_n * BLOCK_N, M, N,
                      stride_cm, stride_cn, HAS_BIAS, ACTIVATION, STORE_PREACT)


# --- launcher -----------------------------------------------------------------------------
def constexprs(plan: dict, p) -> tuple[dict, dict]:
    """(the constexprs and launch options every pointer-based kernel of this package
    takes: epilogue, EVEN_K, DOT_PRECISION, operand layouts, DIV and the plan's tile knobs;
    the plan's family knobs). `p`: the launcher's Problem."""
    meta, opts = launch_knobs(plan)
    family = {k: meta.pop(k) for k in FAMILY_KNOBS if k in meta}
    const = dict(**p.epilogue, EVEN_K=p.K % plan["BLOCK_K"] == 0, DOT_PRECISION=p.precision,
                 A_ROW=p.layout[0] == "r", B_ROW=p.layout[1] == "r", DIV=p.div, **meta,
                 **opts)
    return const, family


def entry(plan: dict, p):
    """A plain or PERSISTENT=1 plan's launch-cache entry: the kernel bound to its grid (one
    program per tile, or one per SM) and its constexprs."""
    const, family = constexprs(plan, p)
    tiles = _tiles(p.M, p.N, plan["BLOCK_M"], plan["BLOCK_N"])
    if family.get("PERSISTENT"):
        const["NUM_SMS"] = p.sms
        return _matmul_persistent_kernel[(min(p.sms, tiles),)], const
    return _matmul_kernel[(tiles,)], const
