"""Flash attention (online softmax) in Triton with a Triton backward, and a blocked CPU path.

Forward (Triton tutorial 06's structure, plain pointers so it also runs in the interpreter):
one program per BLOCK_M query rows of one (batch, head); it walks the key/value blocks keeping
the running row max m, row sum l and the unnormalised output in fp32, in the exp2 domain
(scale folded into log2(e)). Key blocks come in two loops: blocks every row may see, with no
mask, then the blocks that need one (the causal diagonal, the ragged end of the sequence), so
only those pay for masking. It writes O and the row log-sum-exp (LSE) the backward reuses.

Backward (FlashAttention-2): Delta = rowsum(O * dO); then one kernel per key block recomputes
P = exp2(S - LSE) block by block and accumulates dK, dV, and one kernel per query block
accumulates dQ. Nothing of size T x T is ever stored.

Causal masking is top-left aligned (key j visible to query i iff j <= i), as
F.scaled_dot_product_attention(is_causal=True). Any T (masked edges), any head dim up to 256
(padded to a power of two >= 16 and masked).

CPU path: the same online softmax over key blocks in torch, all queries at once (memory
O(T * block) rather than O(T^2)), and a backward that recomputes each block's probabilities
from the saved LSE.
"""
from __future__ import annotations

import math

import torch

from . import autotune, ops
from ._common import (ELEMENT_BYTES, SUPPORTED_DTYPES, KernelPlanError, autocast_inputs,
                      compile_run, dot_precision, empty, empty_like, launch_knobs, next_pow2,
                      validate_plan)
from ._triton import HAS_TRITON, require, tl, triton

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256
KNOBS = ("BLOCK_M", "BLOCK_N", "BLOCK_D", "num_warps", "num_stages")
CPU_BLOCK = 256   # keys per block on the CPU path: a 256-wide score block per query row

# --- plans --------------------------------------------------------------------------------
# (BLOCK_M, BLOCK_N, num_warps, num_stages); the first is the default with tuning off.
_FWD_PLANS = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4),
              (64, 64, 4, 3), (64, 32, 4, 4), (128, 64, 4, 4)]
# dK/dV: a key block stays resident, query blocks stream (tutorial 06: 32 x 128, 4 warps).
_DKDV_PLANS = [(32, 128, 4, 4), (64, 128, 8, 3), (32, 64, 4, 4), (64, 64, 4, 3),
               (32, 128, 8, 3)]
# dQ: a query block stays resident, key blocks stream (tutorial 06: 128 x 32).
_DQ_PLANS = [(128, 32, 4, 4), (128, 64, 8, 3), (64, 32, 4, 4), (64, 64, 4, 3),
             (128, 32, 8, 3)]
_INTERPRET_MAX_TILE = 32


def _plan(bm, bn, bd, warps, stages):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd, "num_warps": warps,
            "num_stages": stages}


def smem_bytes(kind: str, plan: dict, dtype: torch.dtype) -> int:
    """Upper bound of the shared memory a plan needs: the resident tile plus num_stages
    copies of each streamed tile pair (K and V, or Q and dO)."""
    e = ELEMENT_BYTES[dtype]
    bm, bn, bd, st = plan["BLOCK_M"], plan["BLOCK_N"], plan["BLOCK_D"], plan["num_stages"]
    if kind == "fwd":
        return (bm * bd + st * 2 * bn * bd) * e
    if kind == "dkdv":
        return (2 * bn * bd + st * 2 * bm * bd) * e
    return (2 * bm * bd + st * 2 * bn * bd) * e   # dq


def regs_ok(kind: str, plan: dict) -> bool:
    """Register-pressure filter: fp32 accumulators plus resident 16-bit tiles per thread.
    Plans over the limit spilled in ptxas for sm_90 (e.g. fwd 128x64 at D=128 with 4 warps:
    255 registers + 128 B stack; with 8 warps 170 registers, no stack), so they are not tried."""
    bm, bn, bd, threads = plan["BLOCK_M"], plan["BLOCK_N"], plan["BLOCK_D"], 32 * plan["num_warps"]
    if kind == "fwd":
        return 1.5 * bm * bd / threads <= 128
    if kind == "dkdv":
        return 3 * bn * bd / threads <= 192
    return 2 * bm * bd / threads <= 128


def candidate_plans(kind: str, Tq: int, Tk: int, D: int, dtype: torch.dtype,
                    device: torch.device) -> list[dict]:
    bd = max(16, next_pow2(D))
    if device.type != "cuda":
        clamp = lambda t: max(16, min(_INTERPRET_MAX_TILE, next_pow2(t)))
        return [_plan(clamp(Tq), clamp(Tk), bd, 4, 1)]
    table = {"fwd": _FWD_PLANS, "dkdv": _DKDV_PLANS, "dq": _DQ_PLANS}[kind]
    fits = lambda tile, t: tile <= max(16, next_pow2(t))
    plans = []
    for bm, bn, w, s in table:
        if dtype == torch.float32:   # fp32 tiles are twice the bytes: halve the big side
            bm, bn = (bm // 2 if bm >= bn else bm), (bn // 2 if bn > bm else bn)
        p = _plan(bm, bn, bd, w, s)
        if p in plans or not (fits(bm, Tq) and fits(bn, Tk)) or not regs_ok(kind, p):
            continue
        try:
            validate_plan(f"attention.{kind}", p, (Tq, Tk, D), smem_bytes(kind, p, dtype), device)
        except KernelPlanError:
            continue
        plans.append(p)
    if not plans:
        clamp = lambda t: max(16, min(64, next_pow2(t)))
        plans.append(_plan(clamp(Tq), clamp(Tk), bd, 4, 2))
    return plans


# --- kernels ------------------------------------------------------------------------------
if HAS_TRITON:
    @triton.jit
    def _load_rows(ptrs, rows, n_rows, offs_d, D,
                   CHECK_ROWS: tl.constexpr, EVEN_D: tl.constexpr):
        # a [rows, BLOCK_D] tile; masks only where the plan says an edge can be crossed
        if CHECK_ROWS:
            if EVEN_D:
                x = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
            else:
                x = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (offs_d[None, :] < D),
                            other=0.0)
        else:
            if EVEN_D:
                x = tl.load(ptrs)
            else:
                x = tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)
        return x

    @triton.jit
    def _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                        lo, hi, offs_m, offs_n, offs_d, T_k, D, qk_scale,
                        MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                        BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            k = _load_rows(k_base + cols[:, None] * stride_kt + offs_d[None, :], cols, T_k,
                           offs_d, D, MASKED, EVEN_D)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
            if MASKED:
                keep = cols[None, :] < T_k
                if CAUSAL:
                    keep = keep & (offs_m[:, None] >= cols[None, :])
                qk = tl.where(keep, qk, float("-inf"))
            # every row sees key `lo` of its first block, so m_new is finite: no NaN
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = _load_rows(v_base + cols[:, None] * stride_vt + offs_d[None, :], cols, T_k,
                           offs_d, D, MASKED, EVEN_D)
            acc = acc * alpha[:, None]
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _attn_fwd_kernel(Q, K, V, O, LSE, qk_scale,
                         stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                         stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
                         H, T_q, T_k, D,
                         CAUSAL: tl.constexpr, EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,
                         DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        q_base = Q + b * stride_qb + h * stride_qh
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        q = _load_rows(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], offs_m, T_q,
                       offs_d, D, not EVEN_M, EVEN_D)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        # [0, full_hi): key blocks every row of this program sees whole; [full_hi, hi): masked
        if CAUSAL:
            hi = tl.minimum(start_m + BLOCK_M, T_k)
            full_hi = (tl.minimum(start_m + 1, T_k) // BLOCK_N) * BLOCK_N
        else:
            hi = T_k
            full_hi = (T_k // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                        0, full_hi, offs_m, offs_n, offs_d, T_k, D, qk_scale,
                                        False, CAUSAL, EVEN_D, BLOCK_N, DOT_PRECISION)
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt,
                                        full_hi, hi, offs_m, offs_n, offs_d, T_k, D, qk_scale,
                                        True, CAUSAL, EVEN_D, BLOCK_N, DOT_PRECISION)
        acc = acc / l_i[:, None]
        o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :]
        o_mask = (offs_m[:, None] < T_q) & (offs_d[None, :] < D)
        tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=o_mask)
        tl.store(LSE + bh * T_q + offs_m, m_i + tl.log2(l_i), mask=offs_m < T_q)

    @triton.jit
    def _attn_bwd_delta_kernel(O, DO, DELTA,
                               stride_ob, stride_oh, stride_ot, stride_db, stride_dh, stride_dt,
                               H, T_q, D, EVEN_D: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        o = _load_rows(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot
                       + offs_d[None, :], offs_m, T_q, offs_d, D, True, EVEN_D)
        do = _load_rows(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dt
                        + offs_d[None, :], offs_m, T_q, offs_d, D, True, EVEN_D)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
        tl.store(DELTA + bh * T_q + offs_m, delta, mask=offs_m < T_q)

    @triton.jit
    def _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_ptr, delta_ptr,
                             stride_qt, stride_dot, lo, hi, offs_n, offs_m0, offs_d, T_q, D,
                             qk_scale, MASKED: tl.constexpr, EVEN_M: tl.constexpr,
                             EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr,
                             DOT_PRECISION: tl.constexpr):
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + offs_m0
            # rows past T_q load q = dO = 0 and LSE = Delta = 0: P^T = 1, dS^T = 0, so they
            # add nothing to dK or dV
            q = _load_rows(q_base + rows[:, None] * stride_qt + offs_d[None, :], rows, T_q,
                           offs_d, D, not EVEN_M, EVEN_D)
            do = _load_rows(do_base + rows[:, None] * stride_dot + offs_d[None, :], rows, T_q,
                            offs_d, D, not EVEN_M, EVEN_D)
            lse = tl.load(lse_ptr + rows, mask=rows < T_q, other=0.0)
            delta = tl.load(delta_ptr + rows, mask=rows < T_q, other=0.0)
            qk_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
            p_t = tl.exp2(qk_t * qk_scale - lse[None, :])
            if MASKED:
                p_t = tl.where(rows[None, :] >= offs_n[:, None], p_t, 0.0)
            dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
        return dk, dv

    @triton.jit
    def _attn_bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, qk_scale, sm_scale,
                              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                              stride_vb, stride_vh, stride_vt, stride_dob, stride_doh,
                              stride_dot, stride_dkb, stride_dkh, stride_dkt,
                              stride_dvb, stride_dvh, stride_dvt,
                              H, T_q, T_k, D,
                              CAUSAL: tl.constexpr, EVEN_M: tl.constexpr,
                              EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr):
        start_n = tl.program_id(0) * BLOCK_N
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_m0 = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        k = _load_rows(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kt
                       + offs_d[None, :], offs_n, T_k, offs_d, D, True, EVEN_D)
        v = _load_rows(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vt
                       + offs_d[None, :], offs_n, T_k, offs_d, D, True, EVEN_D)
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        lse_ptr = LSE + bh * T_q
        delta_ptr = DELTA + bh * T_q
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        if CAUSAL:
            # query blocks before `lo` see none of these keys; blocks from `mid` on see all
            lo = (start_n // BLOCK_M) * BLOCK_M
            mid = ((start_n + BLOCK_N + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
            dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_ptr, delta_ptr,
                                          stride_qt, stride_dot, lo, tl.minimum(mid, T_q),
                                          offs_n, offs_m0, offs_d, T_q, D, qk_scale, True,
                                          EVEN_M, EVEN_D, BLOCK_M, DOT_PRECISION)
        else:
            mid = 0
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_ptr, delta_ptr,
                                      stride_qt, stride_dot, mid, T_q, offs_n, offs_m0,
                                      offs_d, T_q, D, qk_scale, False, EVEN_M, EVEN_D,
                                      BLOCK_M, DOT_PRECISION)
        kv_mask = (offs_n[:, None] < T_k) & (offs_d[None, :] < D)
        tl.store(DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkt
                 + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvt
                 + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)

    @triton.jit
    def _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt,
                           lo, hi, offs_m, offs_n0, offs_d, T_k, D, qk_scale,
                           MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                           BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n0
            k = _load_rows(k_base + cols[:, None] * stride_kt + offs_d[None, :], cols, T_k,
                           offs_d, D, MASKED, EVEN_D)
            v = _load_rows(v_base + cols[:, None] * stride_vt + offs_d[None, :], cols, T_k,
                           offs_d, D, MASKED, EVEN_D)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
            p = tl.exp2(qk * qk_scale - lse[:, None])
            if MASKED:
                keep = cols[None, :] < T_k
                if CAUSAL:
                    keep = keep & (offs_m[:, None] >= cols[None, :])
                p = tl.where(keep, p, 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
        return dq

    @triton.jit
    def _attn_bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, qk_scale, sm_scale,
                            stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                            stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                            stride_dqb, stride_dqh, stride_dqt,
                            H, T_q, T_k, D,
                            CAUSAL: tl.constexpr, EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,
                            DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n0 = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        q = _load_rows(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt
                       + offs_d[None, :], offs_m, T_q, offs_d, D, not EVEN_M, EVEN_D)
        do = _load_rows(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot
                        + offs_d[None, :], offs_m, T_q, offs_d, D, not EVEN_M, EVEN_D)
        lse = tl.load(LSE + bh * T_q + offs_m, mask=offs_m < T_q, other=0.0)
        delta = tl.load(DELTA + bh * T_q + offs_m, mask=offs_m < T_q, other=0.0)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        if CAUSAL:
            hi = tl.minimum(start_m + BLOCK_M, T_k)
            full_hi = (tl.minimum(start_m + 1, T_k) // BLOCK_N) * BLOCK_N
        else:
            hi = T_k
            full_hi = (T_k // BLOCK_N) * BLOCK_N
        dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt,
                                0, full_hi, offs_m, offs_n0, offs_d, T_k, D, qk_scale,
                                False, CAUSAL, EVEN_D, BLOCK_N, DOT_PRECISION)
        dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt,
                                full_hi, hi, offs_m, offs_n0, offs_d, T_k, D, qk_scale,
                                True, CAUSAL, EVEN_D, BLOCK_N, DOT_PRECISION)
        tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqt
                 + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty),
                 mask=(offs_m[:, None] < T_q) & (offs_d[None, :] < D))


# --- launchers ----------------------------------------------------------------------------
def check_inputs(q, k, v) -> tuple[int, int, int, int, int]:
    """Shapes, dtypes and devices of q, k, v; returns (B, H, T_q, T_k, D)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention: q, k, v must be [B, H, T, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(f"attention: k and v must be [B, H, T_k, D] = [{B}, {H}, T_k, {D}] "
                         f"like q {tuple(q.shape)}; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"attention: q, k, v are {q.dtype}, {k.dtype}, {v.dtype}; all must be "
                        "one of bfloat16, float16, float32")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v are on {q.device}, {k.device}, {v.device}")
    return B, H, Tq, k.shape[2], D


def _unit_last(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _scale(scale, D):
    return 1.0 / math.sqrt(D) if scale is None else float(scale)


# (kind, dtype, B, H, T_q, T_k, D, causal, device, precision) -> (kernel bound to its grid,
# constexpr and launch options): repeated calls skip plan search, validation and grid setup.
_LAUNCHES: dict = {}


def _launch(kind, key, args, entry_for, config):
    """Launch kernel `kind` with args; the first call for a key picks (tunes), validates and
    compiles the plan, naming it in a KernelPlanError if the compiler refuses it."""
    entry = _LAUNCHES.get(key) if config is None else None
    if entry is not None:
        fn, const = entry
        fn(*args, **const)
        return
    _, dtype, B, H, Tq, Tk, D, causal, device, _prec = key
    shape = (B, H, Tq, Tk, D)

    def run(plan):
        fn, const = entry_for(plan)
        fn(*args, **const)

    plan = config
    if plan is None:
        tune_key = {"dtype": str(dtype).replace("torch.", ""), "D": D, "causal": int(causal),
                    "T": autotune.bucket(max(Tq, Tk)), "BH": autotune.bucket(B * H)}
        plan = autotune.pick(f"attention.{kind}", tune_key,
                             candidate_plans(kind, Tq, Tk, D, dtype, device), run, device)
    validate_plan(f"attention.{kind}", plan, shape, lambda p: smem_bytes(kind, p, dtype),
                  device, required=KNOBS)
    if plan["BLOCK_D"] < D:
        raise KernelPlanError(f"attention.{kind}", "validate", shape,
                              f"BLOCK_D={plan['BLOCK_D']} is below the head dim {D}", plan)
    compile_run(f"attention.{kind}", shape, run, plan)
    if config is None:
        _LAUNCHES[key] = entry_for(plan)


def forward(q, k, v, causal=True, scale=None, config=None):
    """O, LSE (log2 domain, [B*H, T_q] fp32) of flash attention."""
    B, H, Tq, Tk, D = check_inputs(q, k, v)
    if D > MAX_HEAD_DIM:
        raise ValueError(f"attention: head dim {D} > {MAX_HEAD_DIM} is not supported by the "
                         "Triton kernel; use kernel_backend 'torch'")
    require("the Triton attention")
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    sm_scale = _scale(scale, D)
    o = empty_like(q)
    lse = empty((B * H, Tq), torch.float32, q.device)
    if B * H * Tq == 0:
        return o, lse
    if Tk == 0:
        raise ValueError("attention: T_k = 0 keys: softmax over an empty set is undefined")
    causal = bool(causal)
    prec = dot_precision(q.dtype)

    def entry_for(p):
        meta, opts = launch_knobs(p)
        grid = (-(-Tq // p["BLOCK_M"]), B * H)
        return _attn_fwd_kernel[grid], dict(
            CAUSAL=causal, EVEN_M=Tq % p["BLOCK_M"] == 0, EVEN_D=p["BLOCK_D"] == D,
            DOT_PRECISION=prec, **meta, **opts)

    args = (q, k, v, o, lse, sm_scale * LOG2E, *q.stride()[:3], *k.stride()[:3],
            *v.stride()[:3], *o.stride()[:3], H, Tq, Tk, D)
    _launch("fwd", ("fwd", q.dtype, B, H, Tq, Tk, D, causal, q.device, prec), args,
            entry_for, config)
    return o, lse


def backward(q, k, v, o, lse, do, causal=True, scale=None, configs=None):
    """dQ, dK, dV given O, LSE from forward and dO."""
    B, H, Tq, Tk, D = check_inputs(q, k, v)
    q, k, v, o = _unit_last(q), _unit_last(k), _unit_last(v), _unit_last(o)
    do = _unit_last(do.to(q.dtype))
    sm_scale = _scale(scale, D)
    configs = configs or {}
    dq, dk, dv = empty_like(q), empty_like(k), empty_like(v)
    if B * H * Tq == 0:
        return dq, dk.zero_(), dv.zero_()
    causal = bool(causal)
    bd = max(16, next_pow2(D))
    delta = empty((B * H, Tq), torch.float32, q.device)
    block = 64 if q.device.type == "cuda" else 32
    _attn_bwd_delta_kernel[(-(-Tq // block), B * H)](
        o, do, delta, *o.stride()[:3], *do.stride()[:3], H, Tq, D,
        EVEN_D=bd == D, BLOCK_M=block, BLOCK_D=bd)
    prec = dot_precision(q.dtype)
    flags = lambda p: dict(CAUSAL=causal, EVEN_M=Tq % p["BLOCK_M"] == 0,   # noqa: E731
                           EVEN_D=p["BLOCK_D"] == D, DOT_PRECISION=prec)

    def dkdv_entry(p):
        meta, opts = launch_knobs(p)
        return (_attn_bwd_dkdv_kernel[(-(-Tk // p["BLOCK_N"]), B * H)],
                dict(**flags(p), **meta, **opts))

    def dq_entry(p):
        meta, opts = launch_knobs(p)
        return (_attn_bwd_dq_kernel[(-(-Tq // p["BLOCK_M"]), B * H)],
                dict(**flags(p), **meta, **opts))

    common = (lse, delta, sm_scale * LOG2E, sm_scale, *q.stride()[:3], *k.stride()[:3],
              *v.stride()[:3], *do.stride()[:3])
    _launch("dkdv", ("dkdv", q.dtype, B, H, Tq, Tk, D, causal, q.device, prec),
            (q, k, v, do, dk, dv, *common, *dk.stride()[:3], *dv.stride()[:3], H, Tq, Tk, D),
            dkdv_entry, configs.get("dkdv"))
    _launch("dq", ("dq", q.dtype, B, H, Tq, Tk, D, causal, q.device, prec),
            (q, k, v, do, dq, *common, *dq.stride()[:3], H, Tq, Tk, D),
            dq_entry, configs.get("dq"))
    return dq, dk, dv


def triton_attention(q, k, v, causal=True, scale=None):
    """The Triton path of kernels.attention (knlp_kernels::attention, route "triton")."""
    q, k, v = autocast_inputs(q, k, v)
    B, H, Tq, Tk, D = check_inputs(q, k, v)
    if D > MAX_HEAD_DIM:
        raise ValueError(f"attention: head dim {D} > {MAX_HEAD_DIM} is not supported by the "
                         "Triton kernel; use kernel_backend 'torch'")
    _check_keys(B * H * Tq, Tk)
    return ops.attention(q, k, v, bool(causal), _scale(scale, D), "triton")


def _check_keys(rows, Tk):
    if rows and Tk == 0:
        raise ValueError("attention: T_k = 0 keys: softmax over an empty set is undefined")


# --- CPU path -----------------------------------------------------------------------------
def _mask_diagonal(s, i0, j0, j1, fill):
    """Causal mask of a score block s = rows [i0, T_q) x keys [j0, j1) with i0 = j0: only
    the first j1 - j0 rows (the diagonal square) can see a later key; set those to fill."""
    n = min(j1 - j0, s.shape[-2])
    hidden = torch.ones(n, j1 - j0, dtype=torch.bool, device=s.device).triu_(1)
    s[..., :n, :].masked_fill_(hidden, fill)


def cpu_work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The cpu path computes 16-bit inputs in fp32; its O and LSE come back in this dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def cpu_forward(q, k, v, causal, scale, block):
    """Online-softmax attention over key blocks of `block` keys, all queries at once: (O, LSE)
    in cpu_work_dtype (fp32 for 16-bit inputs), LSE [B, H, T_q] in the natural-log domain.

    Peak extra memory is one [B, H, T_q, block] score block plus O(T * D) state, not the
    [B, H, T_q, T_k] score matrix. Causal: key block [j0, j1) is seen only by queries >= j0,
    so each block multiplies only those rows (half the work of the full product)."""
    wd = cpu_work_dtype(q.dtype)
    qf, kf, vf = q.to(wd), k.to(wd), v.to(wd)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    m = torch.full((B, H, Tq), float("-inf"), dtype=wd, device=q.device)
    l = torch.zeros((B, H, Tq), dtype=wd, device=q.device)
    acc = torch.zeros((B, H, Tq, v.shape[3]), dtype=wd, device=q.device)
    for j0 in range(0, Tk, block):
        j1 = min(j0 + block, Tk)
        i0 = j0 if causal else 0
        if i0 >= Tq:
            break
        s = torch.matmul(qf[:, :, i0:], kf[:, :, j0:j1].transpose(-2, -1)).mul_(scale)
        if causal:
            _mask_diagonal(s, i0, j0, j1, float("-inf"))
        m_old = m[:, :, i0:]
        m_new = torch.maximum(m_old, s.amax(dim=-1))   # key j0 is visible: finite
        s.sub_(m_new[..., None]).exp_()                 # s now holds p
        alpha = torch.exp(m_old - m_new)
        l[:, :, i0:] = l[:, :, i0:] * alpha + s.sum(dim=-1)
        acc_rows = acc[:, :, i0:]
        acc_rows.mul_(alpha[..., None]).add_(torch.matmul(s, vf[:, :, j0:j1]))
        m[:, :, i0:] = m_new
        del s
    o = acc.div_(l[..., None])
    lse = m + torch.log(l)
    return o, lse


def cpu_backward(do, q, k, v, o, lse, causal, scale, block):
    """dQ, dK, dV (in q, k, v's dtypes) from cpu_forward's O and LSE: each block's
    probabilities are recomputed from the saved LSE."""
    wd = o.dtype
    qf, kf, vf, dof = q.to(wd), k.to(wd), v.to(wd), do.to(wd)
    Tq, Tk = q.shape[2], k.shape[2]
    delta = (dof * o).sum(dim=-1)
    dq = torch.zeros_like(qf)
    dk = torch.zeros_like(kf)
    dv = torch.zeros_like(vf)
    for j0 in range(0, Tk, block):
        j1 = min(j0 + block, Tk)
        i0 = j0 if causal else 0
        if i0 >= Tq:
            break
        qs, dos = qf[:, :, i0:], dof[:, :, i0:]
        kb, vb = kf[:, :, j0:j1], vf[:, :, j0:j1]
        # recompute this block's probabilities from the saved LSE
        p = torch.matmul(qs, kb.transpose(-2, -1)).mul_(scale)
        p.sub_(lse[:, :, i0:, None]).exp_()
        if causal:
            _mask_diagonal(p, i0, j0, j1, 0.0)
        dv[:, :, j0:j1] = torch.matmul(p.transpose(-2, -1), dos)
        ds = torch.matmul(dos, vb.transpose(-2, -1))
        ds.sub_(delta[:, :, i0:, None]).mul_(p)
        del p
        dk[:, :, j0:j1] = torch.matmul(ds.transpose(-2, -1), qs).mul_(scale)
        dq[:, :, i0:] += torch.matmul(ds, kb).mul_(scale)
        del ds
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def cpu_attention(q, k, v, causal=True, scale=None, block=CPU_BLOCK):
    """The cpu path of kernels.attention: blocked online softmax, O(T) memory
    (knlp_kernels::attention, route "cpu")."""
    q, k, v = autocast_inputs(q, k, v)
    B, H, Tq, Tk, D = check_inputs(q, k, v)
    if Tk == 0:
        raise ValueError("attention: T_k = 0 keys: softmax over an empty set is undefined")
    return ops.attention(q, k, v, bool(causal), _scale(scale, D), "cpu", int(block))
