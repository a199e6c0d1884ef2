"""Persistent matmul C = act(A @ B + bias) with TMA tensor-descriptor loads and stores, for
Hopper (sm_90+): plan knob TMA=1, in the autotune grid unless KERNELS_TMA=0 (plans.tma_plans).
The tuner picks it at GPT-2's forward shapes, 4096^3, resnet50's fc and some dW products.

Layout follows Triton's tutorial 09 (matmul_kernel_tma_persistent): one program per SM
walks the output tiles in the grouped order of tiled.py (GROUP_M tile-rows share B tiles
in L2), the tile loop flattened with the K loop so the pipeline runs across tiles; A [M, K]
and B [K, N] are read through tensor descriptors, which the TMA unit copies to shared
memory without address arithmetic in the registers. fp32 accumulation and the epilogue of
tiled.py (bias, relu, exact-erf gelu, optional pre-activation Z); C and Z are written
through descriptors. Edges need no masks or wrapping: a descriptor load zero-fills rows/cols
past the tensor (so a partial last K block adds zeros) and a store clips them. Tall plans
(WIDE_M=1) run one program per tile of 3/2 BLOCK_M rows x BLOCK_N, as two dots.

Host-side descriptors (triton.tools.tensor_descriptor.TensorDescriptor, built per call and
passed as kernel arguments), not device-side tl.make_tensor_descriptor: the device-side one
needs a global-memory scratch allocator set process-wide with triton.set_allocator (state
every other kernel in the process sees); the host-side one needs nothing global, and the
interpreter runs it (its descriptor loads and stores are masked pointer accesses), so the
tests exercise the kernel.

TMA's rules: base pointer and every stride but the last 16-byte aligned, the last dimension
contiguous, box sides <= 256. A column-major operand (the backward's dB = A^T @ dZ reads A
transposed; a Linear weight as is is a column-major B) is read through a descriptor of its
row-major transpose, box [BLOCK_K, BLOCK_M] (B: [BLOCK_N, BLOCK_K]), and the loaded tile is
transposed in registers' view only (`.T`: wgmma reads 16-bit operands from shared memory in
either major order), as tutorial 09 does for its [N, K] B. Hence tma_problem_error (each
operand's contiguous dimension, and C's N, a multiple of 8 elements for 16-bit, 4 for fp32;
capability >= 9) for the plan choice, and, since the launch cache is keyed by shape and
layout, not by pointer, a per-call check of the actual tensors: a view that breaks the rule
(a column slice, a row stride not a multiple of 16 bytes) runs the tiled kernel with the
same tiles instead.
"""
from __future__ import annotations

import ctypes
import threading

import torch

from .._common import ELEMENT_BYTES, launch_knobs
from .._triton import HAS_TRITON, VERSION, tl, triton

try:   # triton >= 3.3 (3.6 on the GPU machine, 3.8 here); older or broken: no TMA plans
    from triton.tools.tensor_descriptor import TensorDescriptor
    HAS_TMA = HAS_TRITON
except Exception:   # noqa: BLE001 - any import failure just means "no TMA"
    TensorDescriptor = None
    HAS_TMA = False

TMA_MAX_BOX = 256   # a TMA box (block) side holds at most 256 elements


def tma_problem_error(M: int, N: int, K: int, dtype: torch.dtype, layout: str,
                      device: torch.device | None) -> str | None:
    """Why the TMA kernel cannot run a problem [M, K] @ [K, N] of this dtype and operand
    layout (launcher._layout: "r" row-major, "c" column-major, A then B) on this device, or
    None if it can. device None: an H100 (as plans.gpu_plans assumes); a CPU device: the
    interpreter, which runs descriptors whatever the machine."""
    if not HAS_TMA:
        return (f"triton {VERSION} has no triton.tools.tensor_descriptor (TMA needs triton "
                ">= 3.3)")
    if layout not in ("rr", "rc", "cr", "cc"):
        return f"operand layout {layout!r}: TMA reads row- or column-major A and B"
    # the contiguous dimension of A ([M, K] row-major: K; column-major: M), of B and of C
    rows = {"A": K if layout[0] == "r" else M, "B": N if layout[1] == "r" else K, "C": N}
    multiple = 16 // ELEMENT_BYTES[dtype]
    bad = [f"{name}'s {n}" for name, n in rows.items() if n % multiple]
    if bad:
        return (f"{', '.join(bad)} elements a row: TMA needs 16-byte aligned row strides, "
                f"multiples of {multiple} for {str(dtype).replace('torch.', '')} "
                f"(layout {layout!r})")
    if device is not None and device.type == "cuda":
        if torch.version.hip:   # ROCm reports its own "capability" (gfx1100: 11.0)
            return "a ROCm GPU: TMA descriptors are NVIDIA Hopper's (sm_90+)"
        cap = torch.cuda.get_device_capability(device)
        if cap[0] < 9:
            return (f"compute capability {cap[0]}.{cap[1]}: TMA needs 9.0 or newer (Hopper)")
    return None


def _row_major(t: torch.Tensor) -> torch.Tensor:
    """t as a row-major tensor: itself, or a column-major t's transpose."""
    return t if t.stride(-1) == 1 else t.t()


def descriptors_fit(*tensors: torch.Tensor) -> bool:
    """The actual tensors, each row-major or (read through its transpose) column-major,
    meet TMA's rules: 16-byte aligned base and row stride, unit column stride (a view can
    break them where its shape and layout do not)."""
    for t in map(_row_major, tensors):
        e = t.element_size()
        if t.data_ptr() % 16 or t.stride(1) != 1 or (t.stride(0) * e) % 16:
            return False
    return True


# --- kernel -------------------------------------------------------------------------------
if HAS_TMA:
    from .._triton import apply_activation, tile_ids

    @triton.jit
    def _matmul_tma_kernel(a_desc, b_desc, c_desc, z_desc, bias_ptr,
                           M, N, K,
                           HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                           STORE_PREACT: tl.constexpr, DOT_PRECISION: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                           A_T: tl.constexpr, B_T: tl.constexpr, NUM_SMS: tl.constexpr):
        # A_T (B_T): A (B) is column-major, its descriptor is over A^T [K, M] (B^T [N, K])
        start_pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        k_tiles = tl.cdiv(K, BLOCK_K)
        num_tiles = num_pid_m * num_pid_n
        # the epilogue recomputes its tile from a second counter, as tutorial 09 does: the
        # pipeliner of the flattened loop mishandled a value used in both the prologue and
        # the epilogue (its note: a Blackwell bug; kept, it costs a few integer ops)
        tile_id_c = start_pid - NUM_SMS
        for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=True):
            pid_m, pid_n = tile_ids(tile_id, num_pid_m, num_pid_n, GROUP_M)
            off_m = pid_m * BLOCK_M
            off_n = pid_n * BLOCK_N
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for ki in range(0, k_tiles):
                # out of bounds (M, N edges, K's last partial block) reads as zeros
                a = _tma_load_a(a_desc, off_m, ki * BLOCK_K, A_T)
                b = _tma_load_b(b_desc, ki * BLOCK_K, off_n, B_T)
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

            tile_id_c += NUM_SMS
            pid_m, pid_n = tile_ids(tile_id_c, num_pid_m, num_pid_n, GROUP_M)
            off_cn = pid_n * BLOCK_N
            _tma_epilogue(acc, _tma_bias(bias_ptr, off_cn, N, HAS_BIAS, BLOCK_N), c_desc,
                          z_desc, pid_m * BLOCK_M, off_cn, HAS_BIAS, ACTIVATION,
                          STORE_PREACT)

    @triton.jit
    def _tma_bias(bias_ptr, off_n, N, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
        # the fp32 bias of columns [off_n, off_n + BLOCK_N) (unused without a bias)
        if HAS_BIAS:
            offs_n = off_n + tl.arange(0, BLOCK_N)
            return tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        else:
            return tl.zeros((BLOCK_N,), dtype=tl.float32)

    @triton.jit
    def _tma_epilogue(acc, bias, c_desc, z_desc, off_m, off_n, HAS_BIAS: tl.constexpr,
                      ACTIVATION: tl.constexpr, STORE_PREACT: tl.constexpr):
        # C = act(acc + bias) (and Z = acc + bias) stored at (off_m, off_n) through the
        # descriptors, whose boxes are acc's shape; clipped at M, N
        if HAS_BIAS:
            acc = acc + bias[None, :]
        if STORE_PREACT:  # gelu's backward needs the pre-activation
            z_desc.store([off_m, off_n], acc.to(z_desc.dtype))
        acc = apply_activation(acc, ACTIVATION)
        c_desc.store([off_m, off_n], acc.to(c_desc.dtype))

    @triton.jit
    def _tma_load_a(a_desc, off_m, off_k, A_T: tl.constexpr):
        # an A tile at (off_m, off_k); A_T: the descriptor is over A^T [K, M]
        if A_T:
            return a_desc.load([off_k, off_m]).T
        else:
            return a_desc.load([off_m, off_k])

    @triton.jit
    def _tma_load_b(b_desc, off_k, off_n, B_T: tl.constexpr):
        # a B tile at (off_k, off_n); B_T: the descriptor is over B^T [N, K]
        if B_T:
            return b_desc.load([off_n, off_k]).T
        else:
            return b_desc.load([off_k, off_n])

    @triton.jit
    def _matmul_tma_wide_m_kernel(al_desc, ah_desc, b_desc, cl_desc, ch_desc, zl_desc, zh_desc,
                                bias_ptr, M, N, K,
                                HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                                STORE_PREACT: tl.constexpr, DOT_PRECISION: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                                A_T: tl.constexpr, B_T: tl.constexpr):
        # WIDE_M=1: one program per tile of 3/2 BLOCK_M rows x BLOCK_N cols (cuBLAS's 192x64
        # for ResNet's 12544x1152x128: 132 tiles for 132 SMs where 128x128 gives 98), as two
        # dots sharing each K step's B tile: rows "lo" (the first BLOCK_M, descriptors al,
        # cl, zl) and "hi" (the next BLOCK_M / 2: ah, ch, zh). Both dots keep >= 64 rows for
        # BLOCK_M = 128, so wgmma is not serialized (a 96-row tile of 64 + 32 was). Rows
        # past M (the last tile) read as zeros and are clipped by the stores.
        pid_m, pid_n = tile_ids(tl.program_id(0), tl.cdiv(M, BLOCK_M * 3 // 2),
                                tl.cdiv(N, BLOCK_N), GROUP_M)
        m_lo = pid_m * (BLOCK_M * 3 // 2)
        m_hi = m_lo + BLOCK_M
        off_n = pid_n * BLOCK_N
        bias = _tma_bias(bias_ptr, off_n, N, HAS_BIAS, BLOCK_N)
        acc_lo = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_hi = tl.zeros((BLOCK_M // 2, BLOCK_N), dtype=tl.float32)
        for ki in range(0, tl.cdiv(K, BLOCK_K)):
            b = _tma_load_b(b_desc, ki * BLOCK_K, off_n, B_T)
            acc_lo = tl.dot(_tma_load_a(al_desc, m_lo, ki * BLOCK_K, A_T), b, acc_lo,
                            input_precision=DOT_PRECISION)
            acc_hi = tl.dot(_tma_load_a(ah_desc, m_hi, ki * BLOCK_K, A_T), b, acc_hi,
                            input_precision=DOT_PRECISION)
        _tma_epilogue(acc_lo, bias, cl_desc, zl_desc, m_lo, off_n, HAS_BIAS, ACTIVATION,
                      STORE_PREACT)
        _tma_epilogue(acc_hi, bias, ch_desc, zh_desc, m_hi, off_n, HAS_BIAS, ACTIVATION,
                      STORE_PREACT)


# --- launcher -----------------------------------------------------------------------------
_BOUND = threading.local()   # the device index whose primary context this thread made current


def bind_context(device: torch.device) -> None:
    """Make `device`'s primary CUDA context current on the calling thread (once per thread).
    Filling a descriptor (cuTensorMapEncodeTiled, in Triton's launcher) needs a current
    context, and autograd's backward thread can have none: torch skips cudaSetDevice there
    when the index already matches, and Triton launches through the driver API (without
    this, a Linear's backward through a TMA plan from a warm autotune cache fails with
    "Failed to create tensor map descriptor: invalid device context"). Driver calls only:
    legal while a CUDA graph is being captured."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if getattr(_BOUND, "index", None) == idx:
        return
    cuda = ctypes.CDLL("libcuda.so.1")
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    rc = cuda.cuDeviceGet(ctypes.byref(dev), idx) or \
        cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) or cuda.cuCtxSetCurrent(ctx)
    if ctx.value:   # the runtime holds the primary context; keep its count as it was
        cuda.cuDevicePrimaryCtxRelease(dev)
    if rc:
        raise RuntimeError(f"matmul (TMA plan): could not make cuda:{idx}'s context current "
                           f"on this thread (CUDA driver error {rc}); run with KERNELS_TMA=0")
    _BOUND.index = idx


def entry(plan: dict, p, fallback):
    """A TMA plan's launch-cache entry: a function with the tiled kernel's call signature
    (pointers and strides) that builds the descriptors from the tensors it is given
    (descriptors hold data pointers, so they are made per call) and launches one program
    per SM, or with WIDE_M=1 one program per tall tile. `p`: the launcher's Problem;
    `fallback`: the (kernel, const) entry of the tiled kernel with the same BLOCK_M x
    BLOCK_N, for tensors that break TMA's alignment rules."""
    meta, opts = launch_knobs(plan)
    wide = meta.get("WIDE_M", 0)
    meta = {k: meta[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}   # the tiles'
    bm, bn, bk = plan["BLOCK_M"], plan["BLOCK_N"], plan["BLOCK_K"]
    tiles = -(-p.M // (bm * 3 // 2 if wide else bm)) * -(-p.N // bn)
    a_t, b_t = p.layout[0] == "c", p.layout[1] == "c"
    const = dict(**p.epilogue, DOT_PRECISION=p.precision, A_T=a_t, B_T=b_t, **meta, **opts)
    if wide:
        kernel = _matmul_tma_wide_m_kernel[(tiles,)]
    else:
        kernel = _matmul_tma_kernel[(min(p.sms, tiles),)]
        const["NUM_SMS"] = p.sms
    plain, plain_const = fallback

    def a_desc(a, rows):
        return TensorDescriptor.from_tensor(_row_major(a), [bk, rows] if a_t else [rows, bk])

    def c_desc(c, rows):
        return TensorDescriptor.from_tensor(c, [rows, bn])

    def launch_tma(a, b, c, bias, z, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                   stride_cm, stride_cn):
        if not descriptors_fit(a, b, c, z):
            plain(a, b, c, bias, z, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                  stride_cm, stride_cn, **plain_const)
            return
        if a.is_cuda:   # the interpreter's descriptors need no context
            bind_context(a.device)
        b_desc = TensorDescriptor.from_tensor(_row_major(b), [bn, bk] if b_t else [bk, bn])
        # no Z (STORE_PREACT off): launcher.launch passes C in its place; reuse C's descriptors
        heights = (bm, bm // 2) if wide else (bm,)
        a_descs = [a_desc(a, h) for h in heights]
        c_descs = [c_desc(c, h) for h in heights]
        z_descs = c_descs if z is c else [c_desc(z, h) for h in heights]
        if wide:
            kernel(*a_descs, b_desc, *c_descs, *z_descs, bias, M, N, K, **const)
        else:
            kernel(a_descs[0], b_desc, c_descs[0], z_descs[0], bias, M, N, K, **const)
    return launch_tma, {}
