"""Tiled matmul C = act(A @ B + bias) in Triton; trains through the knlp_kernels::matmul /
::linear custom ops and their backward op (kernels/ops.py), which run the functions below.

Layout follows Triton's tutorial 03: one program per BLOCK_M x BLOCK_N tile of C, launched
in grouped order (GROUP_M tile-rows share B tiles in L2), fp32 accumulation over BLOCK_K
steps, bias and activation (relu, exact-erf gelu) applied in the fp32 epilogue. A and B may
have any strides (a transposed view costs no copy: the backward passes and the Linear weight
[N, K] use them). Any M, N, K: a partial last tile moves back to end at the edge
(_tile_start) and stores only its own rows/cols; in a problem smaller than a tile, rows/cols
past the edge wrap round (`% M`) on load and are masked on store; K is masked unless it
divides by BLOCK_K (EVEN_K). Sizes and strides that are not multiples of 16 get their
power-of-two divisor passed as DIV (_divisibility, _aligned), so loads along them stay
vectorized (resnet50's fc, N = 1000: 59 -> 9 us on the H200).

The backward runs the same kernel twice: dA = dZ @ B^T and dB = A^T @ dZ (dW = dZ^T @ X for
a Linear weight, written directly as [N, K]), with dZ = dC * act'(Z) from a small fused
elementwise kernel.

Split-K plans (SPLIT_K = S > 1) are for shapes with fewer tiles than SMs: S programs per tile
each reduce a contiguous share of the K blocks into an fp32 workspace [S, M, N]; a second
kernel adds the S partials in slice order (no atomics: bit-reproducible) and runs the epilogue.
Wide split-K plans (WIDE=1) are for deep-K products with enough rows and columns (GPT-2's dW
products: K = 16384 tokens): the same split-K, but each program's tile is 3/2 BLOCK_M x 3/2
BLOCK_N (192x192 for 128x128: cuBLAS's dW tile), four dots per K step sharing its loads.
Stream-K plans (STREAM_K) are for shapes whose tiles leave the last wave part-empty (GPT-2's
dW products, the ResNet few-tile GEMMs): one kernel deals every tile's K blocks out evenly
over all SMs; a tile cut between programs is finished by the program holding its first K
block, which adds the others' fp32 partials in a fixed order (bit-reproducible too).

CPU path: torch.addmm (+ activation). On a CPU the vendor BLAS is the fastest path there is;
the Triton kernel runs on CPU tensors only under TRITON_INTERPRET=1 (tests).
"""
from __future__ import annotations

import math
import os
import weakref

import torch

from . import autotune, matmul_tma, ops
from ._common import (ELEMENT_BYTES, SUPPORTED_DTYPES, KernelPlanError, autocast_inputs,
                      dot_precision, empty, launch_knobs, next_pow2, validate_plan)
from ._triton import HAS_TRITON, require, tl, triton
from .reference import activate

ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2}
KNOBS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")
# optional knobs: PERSISTENT (1: one program per SM), SPLIT_K (a power of two; 1 = off),
# WIDE (1, with SPLIT_K >= 2: the wide split-K kernel's 3/2 BLOCK_M x 3/2 BLOCK_N tiles),
# TMA (1: the persistent TMA-descriptor kernel of matmul_tma.py) and STREAM_K (programs per
# SM of the stream-K kernel)

# --- plans --------------------------------------------------------------------------------
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, PERSISTENT). The first entry is the
# default when tuning is off (KERNELS_AUTOTUNE=0). 16-bit inputs: tensor-core tiles from
# tutorial 03's Hopper list, BLOCK_K=128 for K-contiguous operands, and persistent variants
# (one program per SM walking the tiles, tutorial 09: the next tile's loads overlap this
# tile's epilogue). The filter below drops tiles far larger than the problem. First H100 run
# (2026-11-23): the plain kernel's best plans reached 0.88-0.93x cuBLAS at GPT-2 shapes with
# row-major B and 0.73-0.79x with a Linear weight (K-contiguous B). The persistent plans
# (verified on the H100 since; they never won the tuning there, but do at some GPT-2
# products on the H200) join the grid unless KERNELS_PERSISTENT=0. Split-K variants are added
# per problem (_SPLIT_K_TILES below), not listed here.
_PLANS_16BIT = [
    (128, 128, 64, 8, 4, 0), (128, 256, 64, 8, 3, 0), (128, 256, 64, 8, 4, 0),
    (256, 128, 64, 8, 3, 0), (128, 128, 64, 4, 4, 0), (128, 64, 64, 4, 4, 0),
    (64, 128, 64, 4, 4, 0), (64, 64, 64, 4, 4, 0), (32, 64, 64, 4, 4, 0),
    (16, 64, 128, 4, 4, 0), (128, 128, 128, 8, 3, 0), (128, 256, 128, 8, 2, 0),
    (128, 256, 64, 8, 3, 1), (128, 128, 64, 8, 4, 1), (128, 128, 64, 4, 4, 1),
    (128, 128, 128, 8, 3, 1),
]
# ... and for the few-tile products (fewer 128x128 tiles than SMs: the late ResNet GEMMs and
# resnet50's fc), 64x64 tiles with deeper pipelines: a few programs each walking a long K
# loop wait on memory, and more stages keep more loads in flight. H200 (2026-12-02), best
# plans forced: fc 8.8 -> 8.0 us (64x64x64, 8 stages; torch 7.8), 784x4608x512 14.3 -> 12.5
# (64x64x128, 5 stages; torch 11.3).
_FEW_TILE_PLANS_16BIT = [(64, 64, 128, 4, 4, 0), (64, 64, 128, 4, 5, 0), (64, 64, 64, 4, 6, 0),
                         (64, 64, 64, 4, 8, 0)]
# fp32 in full precision (ieee) runs on FMA units, not tensor cores: smaller K steps.
_PLANS_FP32 = [
    (64, 64, 32, 4, 3, 0), (128, 64, 32, 8, 3, 0), (64, 128, 32, 8, 3, 0),
    (128, 128, 32, 8, 3, 0), (32, 64, 32, 4, 3, 0), (16, 64, 32, 4, 3, 0),
]
# Split-K: with fewer output tiles than SMs most SMs idle. On the first H100 run resnet50 fc
# 256x2048x1000 (M x K x N: 16 tiles of 128x128 on 132 SMs) ran at 0.22x cuBLAS, 784x4608x512
# at 0.61x, and GPT-2's dW of a 768->768 Linear ([768, 16384] @ [16384, 768], 36 tiles) at
# ~250 TFLOP/s vs ~500 for products with enough tiles. SPLIT_K = S gives each tile S programs,
# each reducing 1/S of the K blocks. Offered for these tiles (BLOCK_M, BLOCK_N, BLOCK_K,
# num_warps, num_stages) only while the plan's tiles are fewer than the SMs and every split
# keeps >= 2 BLOCK_K steps (K // S >= 2 * BLOCK_K). On the H100 split-K won for 784x4608x512,
# 256x2048x1000 and GPT-2's 768x768 dW (results/kernels/autotune-2026-11-23-h100-6.json).
_SPLIT_K_TILES_16BIT = [(64, 64, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
                        (128, 128, 64, 8, 4),
                        # half the K steps per program, for the latency-bound few-tile GEMMs
                        (64, 64, 128, 4, 3), (128, 64, 128, 4, 3), (64, 128, 128, 4, 3)]
_SPLIT_K_TILES_FP32 = [(64, 64, 32, 4, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3),
                       (128, 128, 32, 8, 3)]
_SPLIT_K_FACTORS = (2, 4, 8)
# Wide split-K (WIDE=1): the tile is 3/2 BLOCK_M x 3/2 BLOCK_N, as four dots (BLOCK_M and
# BLOCK_M / 2 rows times BLOCK_N and BLOCK_N / 2 columns; Triton's tiles are powers of two).
# cuBLAS runs GPT-2's dW products (K = 16384 tokens) as 192x192 split-K tiles on the H200
# (profile-gpt2-torch-cudagraphs-2026-12-02-h200.txt). Probe 13 (H200, 2026-12-02,
# probes-2026-12-02-h200-4.txt), us: dW [3072, 768] 125 at S = 2 vs 152 for our tuned
# 128x256 plan and 106 for torch; [768, 3072] 128 vs 153 / 111; [768, 768] 41 at S = 8 vs
# 45 / 37; [2304, 768] 121 vs 86 (the tuned plan stays). 4 stages were slower than 3 at
# every shape. Offered for 16-bit inputs where K >= _WIDE_MIN_DEPTH * max(M, N) and the
# wide tile fits within M and N, with S in _SPLIT_K_FACTORS while K // S >= 2 * BLOCK_K.
# Probe 16 (H200, 2026-12-02): BLOCK_K 32 with 4 stages 127 / 128 / 136 us at [3072, 768],
# [768, 3072] and 768x768 (K = 65536) against 130 / 134-140 / 141 for BLOCK_K 64.
_WIDE_TILES_16BIT = [(128, 128, 64, 8, 3), (128, 128, 32, 8, 4)]
_WIDE_MIN_DEPTH = 4
# TMA plans (matmul_tma.py; tutorial 09's Hopper tiles, 128 x 128/256, BLOCK_K 64/128, 8 warps):
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). Offered unless KERNELS_TMA=0, for
# operands TMA can read (row- or column-major, rows 16-byte aligned: tma_problem_error), on
# sm_90+, with at least one full wave of tiles
# (one program per SM: fewer tiles leave SMs idle). On the H100 (triton 3.6) they won at
# GPT-2's forward shapes and 4096^3 (bench-2026-11-23-h100-4-tma: 0.918-1.0x cuBLAS).
_TMA_TILES_16BIT = [(128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (128, 128, 128, 8, 3)]
_TMA_TILES_FP32 = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3)]
# ... and for the few-tile products (fewer 128x128 tiles than SMs: resnet50's fc, the late
# ResNet convolutions), smaller TMA tiles, one program per tile. On the H200 (2026-12-01)
# 64x128 won 3136x2304x256 (10.4 us; the plain kernel's best 10.5); at the fc they tied.
_TMA_SMALL_TILES_16BIT = [(64, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4),
                          (64, 64, 128, 4, 3),
                          # 2026-12-02, forced on the H200: 12544x1152x128 9.5 -> 9.3 us,
                          # 3136x2304x256 10.4 -> 9.6
                          (128, 128, 64, 4, 4), (64, 128, 128, 4, 4)]
_TMA_SMALL_TILES_FP32 = [(64, 64, 32, 4, 3)]
# ... and tall TMA tiles (WIDE_M=1: 3/2 BLOCK_M rows x BLOCK_N, as two dots of BLOCK_M and
# BLOCK_M / 2 rows; one program per tile), 16-bit only: (BLOCK_M, BLOCK_N, BLOCK_K,
# num_warps, num_stages, GROUP_M). cuBLAS runs ResNet's 12544x1152x128 as 192x64 tiles,
# 132 for 132 SMs (nvjet_sm90_tst_64x192_64x6_2x1, probe 17); where 128x128 gives 98. On
# the H200 (2026-12-02, probes-2026-12-02-h200-10.txt, two machines): 8.37 / 8.58 us vs
# torch 7.76 / 8.22 and 9.4 for the tuned plan; GROUP_M = 1 puts a row block's two column
# tiles side by side, so A (28.9 MB, read once at ~3.5 TB/s: the product is memory-bound)
# comes from HBM once (10.2 us at GROUP_M = 8). 192x256 at 16384x3072x768 (GPT-2's proj):
# 102.7 us vs 109.3 tuned, torch 102.7; slower at GPT-2's other forward shapes.
_TMA_TALL_TILES_16BIT = [(128, 256, 64, 8, 3, 8)]
_TMA_TALL_SMALL_TILES_16BIT = [(128, 64, 64, 4, 5, 1)]
# Stream-K (STREAM_K = programs per SM), offered only with KERNELS_STREAM_K=1, where a plan's
# tiles fill less than 90% of the SM slots of their waves: GPT-2's dW of a [3072, 768] weight
# is 144 tiles of 128x128 on 132 SMs, two waves, the second of 12 tiles. Correct and
# bit-reproducible on the H200 (2026-12-02: 56 forced plans, 1 and 2 programs per SM, bf16
# and fp32, odd shapes), but slower than the best tiled plan at every product tried, in both
# versions (a while-loop over segments; now three straight phases: tail, whole tiles, head).
# Three-phase, best stream-K plan vs tuned vs torch, us: dW 3072x16384x768 150 / 153 / 106,
# dW 768x16384x768 49 / 47 / 36, fc 256x2048x1000 11.2 / 7.7 / 8.1, 12544x1152x128 15.5 /
# 9.3 / 8.2, 784x4608x512 19.2 / 14.1 / 10.7. Even the dW products, with all 132 SMs busy
# instead of 72, ran no faster than the one-wave 128x256 tiled plan: not wave quantization
# but a limit the SMs share (the tile loads through L2) binds there. The small products pay
# the fixed costs (the per-call flag reset, the handover) on a few-us kernel. Kept opt-in and
# tested, for GPUs and shapes where a tail wave does dominate. (BLOCK_M, BLOCK_N, BLOCK_K,
# num_warps, num_stages, programs per SM).
_STREAM_K_TILES_16BIT = [(128, 128, 64, 8, 4, 1), (128, 256, 64, 8, 3, 1),
                         (128, 64, 64, 4, 4, 1), (64, 128, 64, 4, 4, 1), (64, 64, 64, 4, 4, 1)]
_STREAM_K_TILES_FP32 = [(64, 64, 32, 4, 3, 1), (128, 64, 32, 8, 3, 1), (128, 128, 32, 8, 3, 1)]
_STREAM_K_MIN_FILL = 0.9
_STREAM_K_MAX_PER_SM = 4
# The split-K reduce kernel's own tile, so the sum spreads over many programs even where the
# product has few tiles (256x1000: 64 programs of 32x128, vs 16 tiles of 128x128).
_REDUCE_BLOCK_M, _REDUCE_BLOCK_N = 32, 128
_INTERPRET_MAX_TILE = 32   # the CPU interpreter's cost grows with tile size: keep tiles small


def switched_on(name: str) -> bool:
    """An on-by-default plan family's switch (KERNELS_PERSISTENT, KERNELS_TMA): off only
    when the variable is 0, off, false or no."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "off", "false", "no")


def _plan(bm, bn, bk, warps, stages, persistent=0, group=8, split_k=1, stream_k=0):
    plan = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group,
            "num_warps": warps, "num_stages": stages}
    if persistent:
        plan["PERSISTENT"] = 1
    if split_k > 1:
        plan["SPLIT_K"] = split_k
    if stream_k:
        plan["STREAM_K"] = stream_k
    return plan


def smem_bytes(plan: dict, dtype: torch.dtype) -> int:
    """Shared memory of the software pipeline: one A and one B tile per stage (an upper
    bound: Triton keeps num_stages buffers at most; matched ptxas for sm_90 exactly), plus
    for the persistent kernel an epilogue tile (its flattened loop keeps one: +32 KB for
    128x128 bf16 tiles in ptxas for sm_90)."""
    e = ELEMENT_BYTES[dtype]
    rows = tile_shape(plan)[0] if plan.get("WIDE_M") else plan["BLOCK_M"]
    total = (rows + plan["BLOCK_N"]) * plan["BLOCK_K"] * e * plan["num_stages"]
    if plan.get("WIDE"):   # tiles of 3/2 BLOCK_M x 3/2 BLOCK_N
        total = total * 3 // 2
    if plan.get("WIDE_M"):   # 3/2 BLOCK_M rows of A; the store's staging tile (3/2 BLOCK_M
        # x BLOCK_N) comes after the K loop, in the pipeline's freed buffers
        return max(total, rows * plan["BLOCK_N"] * e)
    if plan.get("PERSISTENT") or plan.get("TMA"):   # TMA: the store's staging tile
        total += plan["BLOCK_M"] * plan["BLOCK_N"] * e
    return total


def _tiles(M: int, N: int, bm: int, bn: int) -> int:
    """Tiles of bm x bn covering an M x N product."""
    return -(-M // bm) * -(-N // bn)


def _fits(tile: int, dim: int) -> bool:
    """A tile edge no longer than the next power of two above the problem's (min 16)."""
    return tile <= max(16, next_pow2(dim))


def candidate_plans(M: int, N: int, K: int, dtype: torch.dtype,
                    device: torch.device, layout: str | None = None) -> list[dict]:
    """The autotune grid for one problem (gpu_plans with the device's SM count); the
    interpreter gets one small plan (tests force others through launch(config=...))."""
    if device.type != "cuda":
        clamp = lambda d: max(16, min(_INTERPRET_MAX_TILE, next_pow2(d)))
        return [_plan(clamp(M), clamp(N), clamp(K), 4, 1, group=4)]
    return gpu_plans(M, N, K, dtype, num_sms(device), device, layout)


def gpu_plans(M: int, N: int, K: int, dtype: torch.dtype, sms: int,
              device: torch.device | None = None, layout: str | None = None) -> list[dict]:
    """The GPU autotune grid for one problem on a device with `sms` SMs, filtered: no tile
    dimension more than the next power of two above the matching problem dimension (a 256-row
    tile for 5 rows only wastes work), no plan over the device's shared memory (device None:
    an H100's limits, so tests need no GPU), persistent plans only when there are more tiles
    than SMs (and KERNELS_PERSISTENT is not 0), the deep-pipeline _FEW_TILE_PLANS_16BIT and
    split-K plans (split_k_plans) only when there are fewer, wide split-K plans for deep-K
    products (wide_plans), stream-K plans only with
    KERNELS_STREAM_K=1, TMA plans unless KERNELS_TMA=0 (tma_plans; layout: the operands'
    "rr"/"rc"/..., None = unknown, no TMA)."""
    table = _PLANS_FP32 if dtype == torch.float32 else _PLANS_16BIT
    if dtype != torch.float32 and _tiles(M, N, 128, 128) < sms:
        table = table + _FEW_TILE_PLANS_16BIT
    use_persistent = switched_on("KERNELS_PERSISTENT")
    plans = []
    for bm, bn, bk, w, s, persistent in table:
        p = _plan(bm, bn, bk, w, s, persistent)
        if not (_fits(bm, M) and _fits(bn, N) and _fits(bk, K)):
            continue
        if persistent and (not use_persistent or _tiles(M, N, bm, bn) <= sms):
            continue
        if _passes(p, (M, N, K), dtype, device):
            plans.append(p)
    if not plans:
        clamp = lambda d: max(16, min(64, next_pow2(d)))
        plans.append(_plan(clamp(M), clamp(N), clamp(K), 4, 3))
    return plans + tma_plans(M, N, K, dtype, sms, device, layout) + \
        split_k_plans(M, N, K, dtype, sms, device) + wide_plans(M, N, K, dtype, device) + \
        stream_k_plans(M, N, K, dtype, sms, device)


def tma_plans(M: int, N: int, K: int, dtype: torch.dtype, sms: int,
              device: torch.device | None = None, layout: str | None = None) -> list[dict]:
    """TMA variants worth timing: unless KERNELS_TMA=0, a known layout TMA can read
    (matmul_tma.tma_problem_error), tiles that fit the problem; _TMA_TILES_* where 128x128
    tiles fill the `sms` SMs, else the smaller _TMA_SMALL_TILES_*; for 16-bit inputs also
    the tall (WIDE_M=1) _TMA_TALL_TILES_16BIT or _TMA_TALL_SMALL_TILES_16BIT where M holds
    a tall tile."""
    if not switched_on("KERNELS_TMA") or layout is None or \
            matmul_tma.tma_problem_error(M, N, K, dtype, layout, device) is not None:
        return []
    few_tiles = _tiles(M, N, 128, 128) < sms
    if dtype == torch.float32:
        table = _TMA_SMALL_TILES_FP32 if few_tiles else _TMA_TILES_FP32
    else:
        table = _TMA_SMALL_TILES_16BIT if few_tiles else _TMA_TILES_16BIT
    plans = []
    for bm, bn, bk, w, s in table:
        p = dict(_plan(bm, bn, bk, w, s), TMA=1)
        if _fits(bm, M) and _fits(bn, N) and _fits(bk, K) and \
                _passes(p, (M, N, K), dtype, device, layout):
            plans.append(p)
    if dtype != torch.float32:   # tall tiles where M holds one
        tall = _TMA_TALL_SMALL_TILES_16BIT if few_tiles else _TMA_TALL_TILES_16BIT
        for bm, bn, bk, w, s, group in tall:
            p = dict(_plan(bm, bn, bk, w, s, group=group), TMA=1, WIDE_M=1)
            if M >= bm * 3 // 2 and _fits(bn, N) and _fits(bk, K) and \
                    _passes(p, (M, N, K), dtype, device, layout):
                plans.append(p)
    return plans


def split_k_plans(M: int, N: int, K: int, dtype: torch.dtype, sms: int,
                  device: torch.device | None = None) -> list[dict]:
    """Split-K variants worth timing: a tile of _SPLIT_K_TILES_* that fits the problem and
    gives fewer tiles than `sms`, with S in _SPLIT_K_FACTORS while K // S >= 2 * BLOCK_K."""
    table = _SPLIT_K_TILES_FP32 if dtype == torch.float32 else _SPLIT_K_TILES_16BIT
    plans = []
    for bm, bn, bk, w, s in table:
        if not (_fits(bm, M) and _fits(bn, N)) or _tiles(M, N, bm, bn) >= sms:
            continue
        for split in _SPLIT_K_FACTORS:
            if K // split < 2 * bk:
                break
            p = _plan(bm, bn, bk, w, s, split_k=split)
            if _passes(p, (M, N, K), dtype, device):
                plans.append(p)
    return plans


def wide_plans(M: int, N: int, K: int, dtype: torch.dtype,
               device: torch.device | None = None) -> list[dict]:
    """Wide split-K variants worth timing: 16-bit inputs, a deep product (K >=
    _WIDE_MIN_DEPTH * max(M, N)) whose rows and columns hold the wide tile (3/2 BLOCK_M x
    3/2 BLOCK_N of _WIDE_TILES_16BIT), with S in _SPLIT_K_FACTORS while K // S >= 2 *
    BLOCK_K."""
    if dtype == torch.float32 or K < _WIDE_MIN_DEPTH * max(M, N):
        return []
    plans = []
    for bm, bn, bk, w, s in _WIDE_TILES_16BIT:
        if M < bm * 3 // 2 or N < bn * 3 // 2:
            continue
        for split in _SPLIT_K_FACTORS:
            p = dict(_plan(bm, bn, bk, w, s, split_k=split), WIDE=1)
            if K // split >= 2 * bk and _passes(p, (M, N, K), dtype, device):
                plans.append(p)
    return plans


def tile_shape(plan: dict) -> tuple[int, int]:
    """The rows and columns of C one tile covers: BLOCK_M x BLOCK_N, 3/2 of each with
    WIDE=1, 3/2 BLOCK_M x BLOCK_N with WIDE_M=1."""
    if plan.get("WIDE"):
        return plan["BLOCK_M"] * 3 // 2, plan["BLOCK_N"] * 3 // 2
    if plan.get("WIDE_M"):
        return plan["BLOCK_M"] * 3 // 2, plan["BLOCK_N"]
    return plan["BLOCK_M"], plan["BLOCK_N"]


def wave_fill(tiles: int, sms: int) -> float:
    """The share of SM slots the tiles fill over their waves (1.0: whole waves)."""
    return tiles / (-(-tiles // sms) * sms)


def stream_k_plans(M: int, N: int, K: int, dtype: torch.dtype, sms: int,
                   device: torch.device | None = None) -> list[dict]:
    """Stream-K variants worth timing: only with KERNELS_STREAM_K=1, a tile of
    _STREAM_K_TILES_* that fits the problem, has at least 4 K blocks per tile to share, and
    fills less than _STREAM_K_MIN_FILL of the SM slots of its waves (wave_fill)."""
    if os.environ.get("KERNELS_STREAM_K", "0") != "1":
        return []
    table = _STREAM_K_TILES_FP32 if dtype == torch.float32 else _STREAM_K_TILES_16BIT
    plans = []
    for bm, bn, bk, w, s, per_sm in table:
        if not (_fits(bm, M) and _fits(bn, N)) or -(-K // bk) < 4 or \
                wave_fill(_tiles(M, N, bm, bn), sms) >= _STREAM_K_MIN_FILL:
            continue
        p = _plan(bm, bn, bk, w, s, stream_k=per_sm)
        if _passes(p, (M, N, K), dtype, device):
            plans.append(p)
    return plans


def _passes(plan: dict, shape, dtype: torch.dtype, device: torch.device | None,
            layout: str | None = None) -> bool:
    """check_plan as a filter for the candidate lists: False where it refuses the plan."""
    try:
        check_plan(plan, shape, dtype, device, layout)
    except KernelPlanError:
        return False
    return True


def check_plan(plan: dict, shape, dtype: torch.dtype, device: torch.device | None,
               layout: str | None = None) -> None:
    """validate_plan for a matmul plan (knobs, tiles, SPLIT_K, shared memory) plus the rules
    of this op: split-K runs the tiled kernel, not the persistent one; WIDE=1 only with
    SPLIT_K >= 2 (its own split-K kernel) and BLOCK_M, BLOCK_N >= 32; STREAM_K (1 to 4
    programs per SM) runs its own kernel, so none of SPLIT_K > 1, PERSISTENT, TMA; TMA=1 runs
    its own persistent kernel (so neither SPLIT_K > 1 nor PERSISTENT) on problems TMA can
    read (matmul_tma.tma_problem_error, given the operand layout), with tiles <= 256 a side;
    WIDE_M=1 (tall tiles, one program each) only with TMA=1 and BLOCK_M >= 32."""
    validate_plan("matmul", plan, shape, lambda p: smem_bytes(p, dtype), device,
                  required=KNOBS)
    if plan.get("SPLIT_K", 1) > 1 and plan.get("PERSISTENT"):
        raise KernelPlanError("matmul", "validate", shape,
                              f"SPLIT_K={plan['SPLIT_K']} with PERSISTENT=1: split-K runs "
                              "the tiled kernel only; set SPLIT_K=1 or drop PERSISTENT",
                              plan)
    if "WIDE" in plan:
        why = None
        if plan["WIDE"] != 1:
            why = f"WIDE={plan['WIDE']} must be 1 (tiles of 3/2 BLOCK_M x 3/2 BLOCK_N) or absent"
        elif plan.get("SPLIT_K", 1) < 2 or plan.get("PERSISTENT") or plan.get("TMA") or \
                plan.get("STREAM_K"):
            why = ("WIDE=1 is a split-K kernel: it needs SPLIT_K >= 2 and none of "
                   "PERSISTENT, TMA, STREAM_K")
        elif min(plan["BLOCK_M"], plan["BLOCK_N"]) < 32:
            why = ("WIDE=1 needs BLOCK_M and BLOCK_N >= 32 (its second dots are BLOCK / 2 "
                   "a side, and tl.dot needs >= 16)")
        if why:
            raise KernelPlanError("matmul", "validate", shape, why, plan)
    if "WIDE_M" in plan:
        why = None
        if plan["WIDE_M"] != 1:
            why = f"WIDE_M={plan['WIDE_M']} must be 1 (tiles of 3/2 BLOCK_M x BLOCK_N) or absent"
        elif not plan.get("TMA"):   # (WIDE with TMA is refused above)
            why = "WIDE_M=1 is a TMA kernel: it needs TMA=1"
        elif plan["BLOCK_M"] < 32:
            why = ("WIDE_M=1 needs BLOCK_M >= 32 (its second dot is BLOCK_M / 2 rows, and "
                   "tl.dot needs >= 16)")
        if why:
            raise KernelPlanError("matmul", "validate", shape, why, plan)
    if "STREAM_K" in plan:
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
    if plan.get("TMA"):
        big = [k for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if plan[k] > matmul_tma.TMA_MAX_BOX]
        if plan.get("SPLIT_K", 1) > 1 or plan.get("PERSISTENT"):
            why = ("with SPLIT_K>1 or PERSISTENT=1: the TMA kernel is persistent and unsplit; "
                   "drop SPLIT_K and PERSISTENT, or drop TMA")
        elif big:
            why = f"{big} over {matmul_tma.TMA_MAX_BOX}, a TMA box side's limit; drop TMA"
        else:   # layout None: taken as "rr" (the launch entry still checks each call's tensors)
            why = matmul_tma.tma_problem_error(*shape, dtype, layout or "rr", device)
            why = why and f"{why}; drop TMA"
        if why:
            raise KernelPlanError("matmul", "validate", shape, f"TMA=1: {why}", plan)


_SMS: dict = {}


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4   # the interpreter: a few "SMs" so the persistent loop runs several tiles
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


# --- kernels ------------------------------------------------------------------------------
if HAS_TRITON:
    from ._triton import apply_activation, tile_ids

    @triton.jit
    def _known_multiple(x, DIV: tl.constexpr):
        # x, which the launcher checked is a multiple of DIV, written so that Triton's
        # alignment analysis knows it: (x // DIV) * DIV is x. Triton specializes an int
        # argument on divisibility by 16 only, so N = 1000 (resnet50's fc) and a row stride
        # of 1000 read as unaligned: loads along them went scalar, one element per
        # instruction and no async copies into the pipeline. DIV 2/4/8 gives vector loads
        # back; 1 (nothing to say) and 16 (Triton's own) leave x as it is.
        if DIV > 1 and DIV < 16:
            x = x // DIV * DIV
        return x

    @triton.jit
    def _aligned(M, N, stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
                 A_ROW: tl.constexpr, B_ROW: tl.constexpr, DIV: tl.constexpr):
        # the values the tile loads and stores step by, with DIV (matmul._divisibility)
        # made known: C's N and row stride, A's and B's non-unit strides, and M when A is
        # column-major (its rows are then the contiguous, `% M`-wrapped direction)
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
        # bounds and in order instead of wrapping round to the start. On the H200 the wrapped
        # last column tile of resnet50's fc (N = 1000: cols 960-999, then 0-23) ran slowest,
        # and a one-wave kernel takes its slowest tile's time: 64x64 tiles 10.1 -> 8.3 us
        # shifted (torch 8.2). The rows (cols) it shares with the tile before are computed
        # twice and stored once (the epilogue masks below pid * BLOCK).
        return tl.maximum(tl.minimum(pid * BLOCK, size - BLOCK), 0)

    @triton.jit
    def _load_bias(bias_ptr, offs_cn, N, HAS_BIAS: tl.constexpr):
        # the bias of columns offs_cn in fp32 (zeros without one), for _epilogue. The kernels
        # load it before their K loop, whose latency hides the load's: loaded in the
        # epilogue it added 1.6 us to resnet50's fc as a Linear (64x64x64 tiles, 8 stages,
        # 8.0 -> 9.6 us; H200, 2026-12-02)
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
        # Needs programs <= the K blocks in all (the launcher's min): with an empty unit a
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


# --- launchers ----------------------------------------------------------------------------
def _layout(t: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Row-major ("r") or column-major ("c") view; anything else is copied row-major."""
    if t.stride(-1) == 1:
        return t, "r"
    if t.stride(-2) == 1:
        return t, "c"
    return t.contiguous(), "r"


def launch(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None, store_preact: bool = False,
           config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """C = act(a @ b + bias) for 2-D a [M, K] and b [K, N] of any strides.
    Returns (C, Z) with Z the pre-activation when store_preact, else None."""
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


def _divisibility(a, b, la: str, lb: str, M: int, N: int) -> int:
    """The largest power of two, up to 16, that divides every value the kernels step along
    contiguous memory by (the `DIV` of _aligned): N and C's row stride (N), the non-unit
    stride of A and of B, and M when A is column-major. 16 where all are multiples of 16
    (Triton's own specialization then says so); a zero stride divides by anything."""
    g = math.gcd(N, a.stride(0) if la == "r" else a.stride(1),
                 b.stride(0) if lb == "r" else b.stride(1))
    if la == "c":
        g = math.gcd(g, M)
    return 16 if g == 0 else min(16, g & -g)


# (dtype, layouts, divisibility, M, N, K, epilogue, device, precision) -> (kernel bound to its
# grid, constexpr and launch options): a repeated call skips the plan search, validation and
# grid arithmetic (on the first H100 run, ~0.1 ms of Python per call made GPT-2-sized
# products CPU-bound).
_LAUNCHES: dict = {}


def _first_launch(key, a, b, c, bias, z, config):
    dtype, la, lb, div, M, N, K, has_bias, act, has_z, device, prec = key
    strides = dict(A_ROW=la == "r", B_ROW=lb == "r", DIV=div)

    def entry_for(plan):
        meta, opts = launch_knobs(plan)
        persistent = meta.pop("PERSISTENT", 0)
        split_k = meta.pop("SPLIT_K", 1)
        tma = meta.pop("TMA", 0)
        stream_k = meta.pop("STREAM_K", 0)
        wide = meta.pop("WIDE", 0)
        wide_m = meta.pop("WIDE_M", 0)
        tiles = _tiles(M, N, *tile_shape(plan))
        epilogue = dict(HAS_BIAS=has_bias, ACTIVATION=act, STORE_PREACT=has_z)
        even_k = K % plan["BLOCK_K"] == 0
        if stream_k:
            programs = min(num_sms(device) * stream_k, tiles * -(-K // plan["BLOCK_K"]))
            return _stream_k_entry(programs, plan["BLOCK_M"] * plan["BLOCK_N"], dict(
                **epilogue, EVEN_K=even_k, DOT_PRECISION=prec, **strides, **meta, **opts))
        if split_k > 1:
            kernel = _matmul_split_k_wide_kernel if wide else _matmul_split_k_kernel
            return _split_k_entry(kernel[(tiles, split_k)], M, N, split_k, dict(
                EVEN_K=even_k, DOT_PRECISION=prec, SPLIT_K=split_k, **strides, **meta, **opts),
                epilogue)
        if tma:   # misaligned views fall back to the plain kernel (with BLOCK_M x BLOCK_N)
            plain = entry_for({k: v for k, v in plan.items() if k not in ("TMA", "WIDE_M")})
            return matmul_tma.tma_entry(tiles, num_sms(device), dict(
                **epilogue, DOT_PRECISION=prec, A_T=la == "c", B_T=lb == "c", WIDE_M=wide_m,
                **meta, **opts), plain)
        const = dict(**epilogue, EVEN_K=even_k, DOT_PRECISION=prec, **strides, **meta, **opts)
        if persistent:
            sms = num_sms(device)
            const["NUM_SMS"] = sms
            return _matmul_persistent_kernel[(min(sms, tiles),)], const
        return _matmul_kernel[(tiles,)], const

    def run(plan):
        fn, const = entry_for(plan)
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
    try:   # the first launch compiles: name the plan if the compiler refuses it
        run(plan)
    except Exception as exc:
        if type(exc).__module__.startswith("triton"):
            raise KernelPlanError("matmul", "compile", (M, N, K),
                                  f"{type(exc).__name__}: {exc}", plan) from exc
        raise
    if config is None:
        _LAUNCHES[key] = entry_for(plan)


def _split_k_entry(partial, M: int, N: int, split_k: int, partial_const: dict,
                   epilogue: dict):
    """A split-K plan's launch-cache entry: a function with the single kernel's call
    signature that launches the partial products (`partial`: the split-K kernel, plain or
    wide, bound to its grid) into a fresh fp32 workspace [S, M, N], then the reduce kernel
    (ordered sum, bias, activation) into C (and Z). The workspace is allocated per call
    (poisoned like C under verification, so an unwritten partial shows)."""
    reduce = _split_k_reduce_kernel[(-(-M // _REDUCE_BLOCK_M), -(-N // _REDUCE_BLOCK_N))]

    def launch_split_k(a, b, c, bias, z, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                       stride_cm, stride_cn):
        ws = empty((split_k, M, N), torch.float32, c.device)
        partial(a, b, ws, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                ws.stride(0), ws.stride(1), **partial_const)
        reduce(ws, c, bias, z, M, N, ws.stride(0), ws.stride(1), stride_cm, stride_cn,
               SPLIT_K=split_k, BLOCK_M=_REDUCE_BLOCK_M, BLOCK_N=_REDUCE_BLOCK_N,
               num_warps=4, DIV=partial_const["DIV"], **epilogue)
    return launch_split_k, {}


def _stream_k_entry(programs: int, slot: int, const: dict):
    """A stream-K plan's launch-cache entry: the single kernel's call signature, plus the
    per-call memory the kernel hands partial tiles through: an fp32 workspace of one tile
    slot per program and a zeroed flag per program. Both are allocated per call, not kept:
    a buffer kept across calls would need its flags reset by the kernel and would outlive
    the CUDA-graph pool it was allocated in (the in-kernel split-K reduction of 2026-12-01
    stopped torch.compile training that way)."""
    kernel = _matmul_stream_k_kernel[(programs,)]

    def launch_stream_k(a, b, c, bias, z, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                        stride_cm, stride_cn):
        ws = empty((programs, slot), torch.float32, c.device)
        flags = torch.zeros(programs, dtype=torch.int32, device=c.device)
        kernel(a, b, c, bias, z, ws, flags, M, N, K, stride_am, stride_ak, stride_bk,
               stride_bn, stride_cm, stride_cn, programs, **const)
    return launch_stream_k, {}


def _act_grad(g: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    out = empty(g.shape, g.dtype, g.device)
    n = g.numel()
    block = 1024 if g.device.type == "cuda" else 256
    _act_grad_kernel[(-(-n // block),)](g, saved, out, n, ACTIVATION=ACTIVATIONS[activation],
                                        BLOCK=block)
    return out


# --- the ops' bodies (kernels/ops.py registers them as knlp_kernels::matmul, ::linear and
# ::matmul_backward) ------------------------------------------------------------------------
def matmul_forward(route, a, b, bias, activation, store_preact):
    """(C, Z) = (act(a @ b + bias), the pre-activation or None) for a [..., M, K], b [K, N].
    Z is stored only for gelu with store_preact (its backward needs it; relu's reads C)."""
    K, N = b.shape
    lead = a.shape[:-1]
    a2 = a.reshape(-1, K)
    store_preact = store_preact and activation == "gelu"
    if route == "triton":
        c, z = launch(a2, b, bias, activation, store_preact=store_preact)
    else:   # the cpu path: one addmm (bias fused by BLAS) and the activation
        y = torch.addmm(bias, a2, b) if bias is not None else a2 @ b
        c, z = activate(y, activation), (y if store_preact else None)
    return c.reshape(*lead, N), (z.reshape(*lead, N) if z is not None else None)


def linear_forward(route, x, weight, bias, weight_kn):
    """F.linear(x, weight, bias); the triton route multiplies by weight_kn, the weight's
    row-major [K, N] copy (weight_kn() below), or by the weight as is when given None
    (weight_as_is)."""
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
    da = db = dbias = None
    if route == "triton":
        if activation is not None:
            g = _act_grad(g.contiguous(), saved, activation)
        if need_a:
            da = launch(g, bk.t())[0].reshape(*lead, K)
        if need_b:
            db = launch(g.t(), a2)[0] if weight_layout else launch(a2.t(), g)[0]
        if need_bias:
            # fp32 accumulation without an fp32 copy of g (g.float() was 151 MB at GPT-2's
            # 16384 x 2304): on CUDA, sum(dtype=float32) reads bf16/fp16 and accumulates in
            # fp32 in one pass (ATen make_reduction_from_out_ty, its gpu_lowp_to_f32 case)
            dbias = g.sum(0, dtype=torch.float32)
        return da, db, dbias
    # the cpu path: the formulas torch's autograd uses for addmm/mm and gelu/relu
    if activation == "gelu":
        g = torch.ops.aten.gelu_backward(g, saved.reshape(g.shape))
    elif activation == "relu":
        g = torch.ops.aten.threshold_backward(g, saved.reshape(g.shape), 0)
    if need_a:
        da = g.mm(bk.t()).reshape(*lead, K)
    if need_b:
        db = g.t().mm(a2) if weight_layout else a2.t().mm(g)
    if need_bias:
        dbias = g.sum(0)
    return da, db, dbias


# --- entry points of each route (kernels.matmul / kernels.linear pick one) -----------------
def triton_matmul(a, b, bias=None, activation=None):
    """The Triton path of kernels.matmul: a [..., M, K] @ b [K, N] (+ bias [N]), activation."""
    _check_matmul(a, b)
    a, b, bias = autocast_inputs(a, b, bias)
    return ops.matmul(a, b, bias, activation, "triton")


def triton_linear(x, weight, bias=None):
    """The Triton path of kernels.linear: F.linear semantics, weight [out, in]."""
    _check_linear(x, weight)
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


def _check_matmul(a, b):
    if b.dim() != 2:
        raise ValueError(f"matmul: b must be 2-D [K, N], got {tuple(b.shape)}; for a batched b "
                         "use torch.matmul")
    if a.dim() < 1 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: a {tuple(a.shape)} @ b {tuple(b.shape)}: a's last "
                         "dimension must equal b's first")


def _check_linear(x, weight):
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and weight {tuple(weight.shape)}: "
                         "x's last dimension must equal weight's in_features (dim 1)")


_AS_IS: dict = {}


def weight_as_is(M: int, N: int, K: int, dtype: torch.dtype, device: torch.device,
                 copy_cached: bool = False) -> bool:
    """Whether a Linear's forward [M, K] @ weight[N, K]^T reads the weight as is (B
    column-major, K-contiguous) rather than a row-major copy (weight_kn), in eager mode
    (under torch.compile the copy is traced and fused with autocast's cast): where the tuner
    has TMA plans for that layout (sm_90+, KERNELS_TMA on, tuning on, rows 16-byte aligned),
    and either the product has few tiles (fewer 128x128 tiles than SMs) or the copy would be
    made on every call (training: copy_cached False). H200 (2026-12-02), graph replay:
    resnet50's fc 6.7 us as is vs 7.6 on the copy; GPT-2's 16384x768->3072 and
    16384x3072->768 forward products 122.9 and 112.3 us as is vs 117.1 and 103.8 on the copy
    (so inference, whose copy is cached, keeps it), yet a training step's forward and
    backward ran faster as is (0.408 vs 0.414 ms and 0.467 vs 0.482: the transposing copy
    made each call costs more than the slower product)."""
    tuning = autotune.mode()
    key = (M, N, K, dtype, device, copy_cached, switched_on("KERNELS_TMA"), tuning)
    hit = _AS_IS.get(key)
    if hit is None:
        hit = device.type == "cuda" and tuning != "0" and M > 0
        if hit:
            sms = num_sms(device)
            hit = (not copy_cached or _tiles(M, N, 128, 128) < sms) and \
                bool(tma_plans(M, N, K, dtype, sms, device, "rc"))
        _AS_IS[key] = hit
    return hit


_WEIGHT_KN: dict = {}


def weight_kn(weight: torch.Tensor, dtype: torch.dtype, cache: bool = True) -> torch.Tensor:
    """A row-major [K, N] copy of a Linear weight [N, K] in `dtype`. The forward product
    with it runs the kernel's faster row-major-B layout: on the first H100 run the best plans
    took 0.105 ms (row-major B) vs 0.124 ms (the weight as is, K-contiguous) at
    16384x768->2304, and the copy is one pass over the weight (3.5 MB there, a few us);
    under autocast it replaces the bf16 cast F.linear makes anyway.

    Training (cache=False) copies on every call: a weight written through `.data` keeps its
    version counter, so no cache key could see the change. Inference reuses the copy while
    the tensor and its version are unchanged."""
    if cache:
        hit = _WEIGHT_KN.get(id(weight))
        if hit is not None and hit[0]() is weight and hit[1] == weight._version and \
                hit[2].dtype == dtype:
            return hit[2]
    with torch.no_grad():
        w_kn = torch.empty((weight.shape[1], weight.shape[0]), dtype=dtype,
                           device=weight.device)
        w_kn.copy_(weight.t())
    if cache:
        if len(_WEIGHT_KN) > 256:
            _WEIGHT_KN.clear()
        _WEIGHT_KN[id(weight)] = (weakref.ref(weight), weight._version, w_kn)
    return w_kn


def cpu_matmul(a, b, bias=None, activation=None):
    """The cpu path of kernels.matmul: one addmm (bias fused by BLAS) and the activation."""
    if b.dim() != 2 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: a {tuple(a.shape)} @ b {tuple(b.shape)}: b must be 2-D "
                         "[K, N] with K = a's last dimension")
    a, b, bias = autocast_inputs(a, b, bias)
    return ops.matmul(a, b, bias, activation, "cpu")


def cpu_linear(x, weight, bias=None):
    """The cpu path of kernels.linear: F.linear."""
    _check_linear(x, weight)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return ops.linear(x, weight, bias, None, "cpu")
