"""The matmul plan families as data, and the filters that turn them into one problem's
autotune grid (candidate_plans) and refuse a plan that cannot run (check_plan).

A plan is a dict of knobs: BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, plus
at most one family's: PERSISTENT=1 (tiled.py, one program per SM), SPLIT_K=S (split_k.py;
with WIDE=1 its 3/2 x 3/2 tiles), TMA=1 (tma.py; with WIDE_M=1 its 3/2-row tiles) or
STREAM_K=programs per SM (kernels/experimental/stream_k.py: never in the grid, only forced).
The first plan of a grid is the default when tuning is off (KERNELS_AUTOTUNE=0).
"""
from __future__ import annotations

import os

import torch

from .._common import ELEMENT_BYTES, KernelPlanError, next_pow2, validate_plan
from . import tma

KNOBS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")
FAMILY_KNOBS = ("PERSISTENT", "SPLIT_K", "TMA", "STREAM_K", "WIDE", "WIDE_M")

# --- the tables ---------------------------------------------------------------------------
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, PERSISTENT), 16-bit inputs: tensor-core
# tiles of tutorial 03's Hopper list, BLOCK_K 128 for K-contiguous operands, and persistent
# variants (tutorial 09: the next tile's loads overlap this tile's epilogue), which pay at
# some GPT-2 products on the H200 (KERNELS_PERSISTENT=0 leaves them out).
_PLANS_16BIT = [
    (128, 128, 64, 8, 4, 0), (128, 256, 64, 8, 3, 0), (128, 256, 64, 8, 4, 0),
    (256, 128, 64, 8, 3, 0), (128, 128, 64, 4, 4, 0), (128, 64, 64, 4, 4, 0),
    (64, 128, 64, 4, 4, 0), (64, 64, 64, 4, 4, 0), (32, 64, 64, 4, 4, 0),
    (16, 64, 128, 4, 4, 0), (128, 128, 128, 8, 3, 0), (128, 256, 128, 8, 2, 0),
    (128, 256, 64, 8, 3, 1), (128, 128, 64, 8, 4, 1), (128, 128, 64, 4, 4, 1),
    (128, 128, 128, 8, 3, 1),
]
# Few-tile products (fewer 128x128 tiles than SMs): a few programs each walk a long K loop
# and wait on memory, so deeper pipelines pay (resnet50's fc 8.8 -> 8.0 us at 8 stages).
_FEW_TILE_PLANS_16BIT = [(64, 64, 128, 4, 4, 0), (64, 64, 128, 4, 5, 0), (64, 64, 64, 4, 6, 0),
                         (64, 64, 64, 4, 8, 0)]
# fp32 in full precision (ieee) runs on FMA units, not tensor cores: smaller K steps.
_PLANS_FP32 = [
    (64, 64, 32, 4, 3, 0), (128, 64, 32, 8, 3, 0), (64, 128, 32, 8, 3, 0),
    (128, 128, 32, 8, 3, 0), (32, 64, 32, 4, 3, 0), (16, 64, 32, 4, 3, 0),
]
# Split-K (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), for products with fewer tiles
# than SMs (resnet50's fc: 16 tiles on 132 SMs, 0.22 -> 0.40x cuBLAS on the H100), with S in
# _SPLIT_K_FACTORS while every split keeps >= 2 BLOCK_K steps.
_SPLIT_K_TILES_16BIT = [(64, 64, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
                        (128, 128, 64, 8, 4),
                        # half the K steps per program, for the latency-bound few-tile GEMMs
                        (64, 64, 128, 4, 3), (128, 64, 128, 4, 3), (64, 128, 128, 4, 3)]
_SPLIT_K_TILES_FP32 = [(64, 64, 32, 4, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3),
                       (128, 128, 32, 8, 3)]
_SPLIT_K_FACTORS = (2, 4, 8)
# Wide split-K (WIDE=1: 3/2 BLOCK_M x 3/2 BLOCK_N tiles, cuBLAS's 192x192 for GPT-2's dW),
# 16-bit deep products only: it pays where K >= _WIDE_MIN_DEPTH * max(M, N) and M, N hold
# the wide tile (dW of a [3072, 768] weight at 16384 tokens: 125 us vs 152 tuned).
_WIDE_TILES_16BIT = [(128, 128, 64, 8, 3), (128, 128, 32, 8, 4)]
_WIDE_MIN_DEPTH = 4
# TMA (tma.py; tutorial 09's Hopper tiles), unless KERNELS_TMA=0, with at least one tile
# per SM: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages).
_TMA_TILES_16BIT = [(128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (128, 128, 128, 8, 3)]
_TMA_TILES_FP32 = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3)]
# ... smaller TMA tiles for the few-tile products, one program per tile
_TMA_SMALL_TILES_16BIT = [(64, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4),
                          (64, 64, 128, 4, 3), (128, 128, 64, 4, 4), (64, 128, 128, 4, 4)]
_TMA_SMALL_TILES_FP32 = [(64, 64, 32, 4, 3)]
# ... and tall TMA tiles (WIDE_M=1: 3/2 BLOCK_M rows), 16-bit only, (BLOCK_M, BLOCK_N,
# BLOCK_K, num_warps, num_stages, GROUP_M). cuBLAS's 192x64 tiling of ResNet's
# 12544x1152x128 gives 132 tiles for 132 SMs where 128x128 gives 98 (8.4 us vs 9.4 tuned);
# GROUP_M = 1 runs a row block's column tiles side by side, so A comes from HBM once.
_TMA_TALL_TILES_16BIT = [(128, 256, 64, 8, 3, 8)]
_TMA_TALL_SMALL_TILES_16BIT = [(128, 64, 64, 4, 5, 1)]
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


def tile_shape(plan: dict) -> tuple[int, int]:
    """The rows and columns of C one tile covers: BLOCK_M x BLOCK_N, 3/2 of each with
    WIDE=1, 3/2 BLOCK_M x BLOCK_N with WIDE_M=1."""
    if plan.get("WIDE"):
        return plan["BLOCK_M"] * 3 // 2, plan["BLOCK_N"] * 3 // 2
    if plan.get("WIDE_M"):
        return plan["BLOCK_M"] * 3 // 2, plan["BLOCK_N"]
    return plan["BLOCK_M"], plan["BLOCK_N"]


def smem_bytes(plan: dict, dtype: torch.dtype) -> int:
    """Shared memory of the software pipeline: one A and one B tile per stage (an upper
    bound; matched ptxas for sm_90 exactly), plus for the persistent and TMA kernels the
    store's staging tile."""
    e = ELEMENT_BYTES[dtype]
    rows = tile_shape(plan)[0] if plan.get("WIDE_M") else plan["BLOCK_M"]
    total = (rows + plan["BLOCK_N"]) * plan["BLOCK_K"] * e * plan["num_stages"]
    if plan.get("WIDE"):   # tiles of 3/2 BLOCK_M x 3/2 BLOCK_N
        total = total * 3 // 2
    if plan.get("WIDE_M"):   # 3/2 BLOCK_M rows of A; the store's staging tile (3/2 BLOCK_M
        # x BLOCK_N) comes after the K loop, in the pipeline's freed buffers
        return max(total, rows * plan["BLOCK_N"] * e)
    if plan.get("PERSISTENT") or plan.get("TMA"):
        total += plan["BLOCK_M"] * plan["BLOCK_N"] * e
    return total


def _tiles(M: int, N: int, bm: int, bn: int) -> int:
    """Tiles of bm x bn covering an M x N product."""
    return -(-M // bm) * -(-N // bn)


def _fits(tile: int, dim: int) -> bool:
    """A tile edge no longer than the next power of two above the problem's (min 16)."""
    return tile <= max(16, next_pow2(dim))


_SMS: dict = {}


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4   # the interpreter: a few "SMs" so the persistent loop runs several tiles
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


# --- the grid of one problem --------------------------------------------------------------
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
    split-K plans only when there are fewer, wide split-K plans for deep-K products, TMA
    plans unless KERNELS_TMA=0 (layout: the operands' "rr"/"rc"/..., None = unknown, no
    TMA). Then tma_plans, split_k_plans and wide_plans, in that order."""
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
        split_k_plans(M, N, K, dtype, sms, device) + wide_plans(M, N, K, dtype, device)


def tma_plans(M: int, N: int, K: int, dtype: torch.dtype, sms: int,
              device: torch.device | None = None, layout: str | None = None) -> list[dict]:
    """TMA variants worth timing: unless KERNELS_TMA=0, a known layout TMA can read
    (tma.tma_problem_error), tiles that fit the problem; _TMA_TILES_* where 128x128 tiles
    fill the `sms` SMs, else the smaller _TMA_SMALL_TILES_*; for 16-bit inputs also the tall
    (WIDE_M=1) _TMA_TALL_TILES_16BIT or _TMA_TALL_SMALL_TILES_16BIT where M holds a tall
    tile."""
    if not switched_on("KERNELS_TMA") or layout is None or \
            tma.tma_problem_error(M, N, K, dtype, layout, device) is not None:
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


# --- validation ---------------------------------------------------------------------------
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
    SPLIT_K >= 2 (its own split-K kernel) and BLOCK_M, BLOCK_N >= 32; STREAM_K as
    kernels/experimental/stream_k.check_plan says; TMA=1 runs its own persistent kernel (so
    neither SPLIT_K > 1 nor PERSISTENT) on problems TMA can read (tma.tma_problem_error,
    given the operand layout), with tiles <= 256 a side; WIDE_M=1 (tall tiles, one program
    each) only with TMA=1 and BLOCK_M >= 32."""
    validate_plan("matmul", plan, shape, lambda p: smem_bytes(p, dtype), device,
                  required=KNOBS)

    def refuse(why):
        raise KernelPlanError("matmul", "validate", shape, why, plan)

    if plan.get("SPLIT_K", 1) > 1 and plan.get("PERSISTENT"):
        refuse(f"SPLIT_K={plan['SPLIT_K']} with PERSISTENT=1: split-K runs the tiled kernel "
               "only; set SPLIT_K=1 or drop PERSISTENT")
    if "WIDE" in plan:
        if plan["WIDE"] != 1:
            refuse(f"WIDE={plan['WIDE']} must be 1 (tiles of 3/2 BLOCK_M x 3/2 BLOCK_N) or "
                   "absent")
        if plan.get("SPLIT_K", 1) < 2 or plan.get("PERSISTENT") or plan.get("TMA") or \
                plan.get("STREAM_K"):
            refuse("WIDE=1 is a split-K kernel: it needs SPLIT_K >= 2 and none of "
                   "PERSISTENT, TMA, STREAM_K")
        if min(plan["BLOCK_M"], plan["BLOCK_N"]) < 32:
            refuse("WIDE=1 needs BLOCK_M and BLOCK_N >= 32 (its second dots are BLOCK / 2 a "
                   "side, and tl.dot needs >= 16)")
    if "WIDE_M" in plan:
        if plan["WIDE_M"] != 1:
            refuse(f"WIDE_M={plan['WIDE_M']} must be 1 (tiles of 3/2 BLOCK_M x BLOCK_N) or "
                   "absent")
        if not plan.get("TMA"):   # (WIDE with TMA is refused above)
            refuse("WIDE_M=1 is a TMA kernel: it needs TMA=1")
        if plan["BLOCK_M"] < 32:
            refuse("WIDE_M=1 needs BLOCK_M >= 32 (its second dot is BLOCK_M / 2 rows, and "
                   "tl.dot needs >= 16)")
    if "STREAM_K" in plan:   # an experimental family: its module is imported only here
        from ..experimental import stream_k
        stream_k.check_plan(plan, shape)
    if plan.get("TMA"):
        big = [k for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if plan[k] > tma.TMA_MAX_BOX]
        if plan.get("SPLIT_K", 1) > 1 or plan.get("PERSISTENT"):
            why = ("with SPLIT_K>1 or PERSISTENT=1: the TMA kernel is persistent and unsplit; "
                   "drop SPLIT_K and PERSISTENT, or drop TMA")
        elif big:
            why = f"{big} over {tma.TMA_MAX_BOX}, a TMA box side's limit; drop TMA"
        else:   # layout None: taken as "rr" (the launch entry still checks each call's tensors)
            why = tma.tma_problem_error(*shape, dtype, layout or "rr", device)
            why = why and f"{why}; drop TMA"
        if why:
            refuse(f"TMA=1: {why}")
