"""Stream-K matmul (plan knob STREAM_K = programs per SM, 1 to 4): experimental, never in
the autotune grid; run it by forcing a plan (kernels.matmul.launch(..., config=plan)), with
candidates from plans() below.

One kernel deals all tiles' K blocks, end to end in grouped tile order, in equal contiguous
shares to every program (all resident), for products whose tiles leave the last wave
part-empty (GPT-2's dW of a [3072, 768] weight: 144 tiles of 128x128 on 132 SMs). The
program holding a tile's first K block adds the other programs' fp32 partials, handed over
through a per-call workspace and per-call zeroed flags (release/acquire atomics), in program
order: bit-reproducible.

Why it stays out of the grid: correct and bit-reproducible on the H200 (56 forced plans,
1 and 2 programs per SM, bf16 and fp32), but slower than the best tiled plan at every
product timed (us, best stream-K / tuned / torch):

    dW 3072x16384x768   150 / 153 / 106     fc 256x2048x1000   11.2 / 7.7 / 8.1
    dW 768x16384x768     49 /  47 /  36     12544x1152x128     15.5 / 9.3 / 8.2
    784x4608x512       19.2 / 14.1 / 10.7

With all 132 SMs busy the dW products ran no faster than the one-wave 128x256 tiled plan:
a limit the SMs share (tile loads through L2) binds there, not wave quantization; the small
products pay its fixed costs (flag reset, handover) on a few-us kernel.
"""
from __future__ import annotations

import torch

from .._common import KernelPlanError, empty
from .._triton import HAS_TRITON, tl, triton
from ..matmul.plans import _fits, _passes, _plan, _tiles
from ..matmul.tiled import constexprs

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, programs per SM)
_STREAM_K_TILES_16BIT = [(128, 128, 64, 8, 4, 1), (128, 256, 64, 8, 3, 1),
                         (128, 64, 64, 4, 4, 1), (64, 128, 64, 4, 4, 1), (64, 64, 64, 4, 4, 1)]
_STREAM_K_TILES_FP32 = [(64, 64, 32, 4, 3, 1), (128, 64, 32, 8, 3, 1), (128, 128, 32, 8, 3, 1)]
_STREAM_K_MIN_FILL = 0.9
_STREAM_K_MAX_PER_SM = 4


def wave_fill(tiles: int, sms: int) -> float:
    """The share of SM slots the tiles fill over their waves (1.0: whole waves)."""
    return tiles / (-(-tiles // sms) * sms)


def plans(M: int, N: int, K: int, dtype: torch.dtype, sms: int,
          device: torch.device | None = None) -> list[dict]:
    """Stream-K plans worth timing for a problem: a tile of _STREAM_K_TILES_* that fits the
    problem, has at least 4 K blocks per tile to share, and fills less than
    _STREAM_K_MIN_FILL of the SM slots of its waves (wave_fill)."""
    table = _STREAM_K_TILES_FP32 if dtype == torch.float32 else _STREAM_K_TILES_16BIT
    out = []
    for bm, bn, bk, w, s, per_sm in table:
        if not (_fits(bm, M) and _fits(bn, N)) or -(-K // bk) < 4 or \
                wave_fill(_tiles(M, N, bm, bn), sms) >= _STREAM_K_MIN_FILL:
            continue
        p = _plan(bm, bn, bk, w, s, stream_k=per_sm)
        if _passes(p, (M, N, K), dtype, device):
            out.append(p)
    return out


def check_plan(plan: dict, shape) -> None:
    """The STREAM_K rules of kernels.matmul.check_plan: 1 to 4 programs per SM, none of
    SPLIT_K > 1, PERSISTENT, TMA (stream-K is its own kernel), fewer than 2^31 tile K
    blocks (the kernel's work counter is int32)."""
    per_sm = plan["STREAM_K"]
    M, N, K = shape
    why = None
    if not isinstance(per_sm, int) or not 1 <= per_sm <= _STREAM_K_MAX_PER_SM:
        why = (f"STREAM_K={per_sm} must be the programs per SM, an integer 1 to "
               f"{_STREAM_K_MAX_PER_SM}")
    elif plan.get("SPLIT_K", 1) > 1 or plan.get("PERSISTENT") or plan.get("TMA"):
        why = ("STREAM_K with SPLIT_K>1, PERSISTENT=1 or TMA=1: stream-K is its own "
               "kernel (it splits K itself); drop the others")
    elif _tiles(M, N, plan["BLOCK_M"], plan["BLOCK_N"]) * -(-K // plan["BLOCK_K"]) >= 2**31:
        why = "STREAM_K: the problem has 2^31 or more tile K blocks; use a plain plan"
    if why:
        raise KernelPlanError("matmul", "validate", shape, why, plan)


if HAS_TRITON:
    from ..matmul.tiled import _aligned, _epilogue, _tile_product

    @triton.jit
    def _matmul_stream_k_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, z_ptr, ws_ptr, flags_ptr,
                                M, N, K,
                                stride_am, stride_ak, stride_bk, stride_bn,
                                stride_cm, stride_cn, programs,
                                HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                                STORE_PREACT: tl.constexpr, EVEN_K: tl.constexpr,
                                DOT_PRECISION: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                                A_ROW: tl.constexpr, B_ROW: tl.constexpr, DIV: tl.constexpr):
        # Stream-K: the tiles' K blocks, laid end to end in grouped tile order, are dealt out
        # in equal contiguous shares to `programs` work units (one per program, all
        # resident), so no SM idles through a last partial wave of tiles. A share is: a tail
        # (the end of a tile, where the share starts inside one), whole tiles, and a head
        # (the start of a tile, where it ends inside one). A tail stores its fp32 partial sum
        # in the unit's workspace slot and raises the unit's flag; whole tiles run as in the
        # tiled kernel; a head adds the partials of the units holding the rest of its tile,
        # in unit order (so C is bit-reproducible), and runs the epilogue. Three straight
        # phases, not one loop over segments: on the H200 a while-loop over segments cost
        # 3-14% per tile against the tiled kernel, a for-loop over whole tiles 0-3%. Units
        # run in reverse program order, so a head waits only on programs launched before it
        # (and the CPU interpreter, which runs programs one by one in order, has run them).
        # Needs programs <= the K blocks in all (entry()'s min): with an empty unit a
        # head would wait forever.
        M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm = _aligned(
            M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, A_ROW, B_ROW, DIV)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        iters = tl.cdiv(K, BLOCK_K)                     # K blocks per tile
        total = num_pid_m * num_pid_n * iters
        unit = programs - 1 - tl.program_id(0)
        it = (unit.to(tl.int64) * total // programs).to(tl.int32)
        end = ((unit + 1).to(tl.int64) * total // programs).to(tl.int32)
        offs_slot = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]

        k_first = it % iters
        if k_first > 0:      # a tail: hand the partial sum to the tile's head
            k_hi = tl.minimum(iters, k_first + end - it)
            acc, bias, pid_m, pid_n, m0, n0 = _tile_product(
                a_ptr, b_ptr, bias_ptr, it // iters, k_first, k_hi, M, N, K, stride_am,
                stride_ak, stride_bk, stride_bn, HAS_BIAS, EVEN_K, DOT_PRECISION, BLOCK_M,
                BLOCK_N, BLOCK_K, GROUP_M)
            tl.store(ws_ptr + unit.to(tl.int64) * (BLOCK_M * BLOCK_N) + offs_slot, acc)
            tl.debug_barrier()      # every thread's stores before the flag
            tl.atomic_xchg(flags_ptr + unit, 1, sem="release")
            it += k_hi - k_first

        for tile in range(tl.cdiv(it, iters), end // iters):     # the whole tiles
            acc, bias, pid_m, pid_n, m0, n0 = _tile_product(
                a_ptr, b_ptr, bias_ptr, tile, 0, iters, M, N, K, stride_am, stride_ak,
                stride_bk, stride_bn, HAS_BIAS, EVEN_K, DOT_PRECISION, BLOCK_M, BLOCK_N,
                BLOCK_K, GROUP_M)
            _epilogue(acc, bias, c_ptr, z_ptr, m0 + tl.arange(0, BLOCK_M),
                      n0 + tl.arange(0, BLOCK_N), pid_m * BLOCK_M, pid_n * BLOCK_N, M, N,
                      stride_cm, stride_cn, HAS_BIAS, ACTIVATION, STORE_PREACT)

        k_last = end % iters
        if (k_last > 0) & (end - k_last >= it):   # a head: its tails are the next units
            tile = end // iters
            acc, bias, pid_m, pid_n, m0, n0 = _tile_product(
                a_ptr, b_ptr, bias_ptr, tile, 0, k_last, M, N, K, stride_am, stride_ak,
                stride_bk, stride_bn, HAS_BIAS, EVEN_K, DOT_PRECISION, BLOCK_M, BLOCK_N,
                BLOCK_K, GROUP_M)
            src = unit + 1
            src_start = end
            while src_start < (tile + 1) * iters:
                while tl.atomic_add(flags_ptr + src, 0, sem="acquire") == 0:
                    pass
                acc += tl.load(ws_ptr + src.to(tl.int64) * (BLOCK_M * BLOCK_N) + offs_slot,
                               cache_modifier=".cg")
                src += 1
                src_start = (src.to(tl.int64) * total // programs).to(tl.int32)
            _epilogue(acc, bias, c_ptr, z_ptr, m0 + tl.arange(0, BLOCK_M),
                      n0 + tl.arange(0, BLOCK_N), pid_m * BLOCK_M, pid_n * BLOCK_N, M, N,
                      stride_cm, stride_cn, HAS_BIAS, ACTIVATION, STORE_PREACT)



def entry(plan: dict, p):
    """A STREAM_K plan's launch-cache entry: the tiled kernel's call signature, plus the
    per-call memory the kernel hands partial tiles through: an fp32 workspace of one tile
    slot per program and a zeroed flag per program. Both are allocated per call: a buffer
    kept across calls would outlive the CUDA-graph pool it was allocated in (which stops
    torch.compile training). `p`: the launcher's Problem."""
    const, family = constexprs(plan, p)
    tiles = _tiles(p.M, p.N, plan["BLOCK_M"], plan["BLOCK_N"])
    programs = min(p.sms * family["STREAM_K"], tiles * -(-p.K // plan["BLOCK_K"]))
    slot = plan["BLOCK_M"] * plan["BLOCK_N"]
    kernel = _matmul_stream_k_kernel[(programs,)]

    def launch_stream_k(a, b, c, bias, z, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                        stride_cm, stride_cn):
        ws = empty((programs, slot), torch.float32, c.device)
        flags = torch.zeros(programs, dtype=torch.int32, device=c.device)
        kernel(a, b, c, bias, z, ws, flags, M, N, K, stride_am, stride_ak, stride_bk,
               stride_bn, stride_cm, stride_cn, programs, **const)
    return launch_stream_k, {}
