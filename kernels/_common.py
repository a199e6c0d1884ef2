"""Helpers shared by the op modules: output allocation (poisoned under verification),
launch-plan validation with a structured error, device limits."""
from __future__ import annotations

import contextlib
import threading

import torch

# Triton refuses a block of more elements than this (TRITON_MAX_TENSOR_NUMEL in triton 3.x).
MAX_TILE_NUMEL = 1 << 20
# Shared memory per block (opt-in) and threads per block of an H100, used for plans checked
# where no GPU is present (CPU interpreter, CI): the device we tune for.
DEFAULT_SMEM_BYTES = 232448
DEFAULT_MAX_THREADS = 1024

_poison = threading.local()


@contextlib.contextmanager
def poisoned():
    """Inside this block every output the kernels allocate starts NaN-filled (not empty), so an
    element a kernel fails to write shows up as NaN in verification instead of stale memory."""
    before = getattr(_poison, "on", False)
    _poison.on = True
    try:
        yield
    finally:
        _poison.on = before


def empty(shape, dtype, device) -> torch.Tensor:
    if getattr(_poison, "on", False):
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """Like torch.empty_like (keeps t's strides, e.g. a [B, T, H, D] view as [B, H, T, D])."""
    if getattr(_poison, "on", False):
        return torch.full_like(t, float("nan") if t.dtype.is_floating_point else -1)
    return torch.empty_like(t)


def autocast_inputs(*tensors):
    """Under torch.autocast, cast floating inputs to the autocast dtype, as F.linear and
    F.scaled_dot_product_attention would be cast (a custom autograd.Function is not)."""
    dev = tensors[0].device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        return tuple(t.to(dt) if t is not None and t.is_floating_point() else t
                     for t in tensors)
    return tensors


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def is_pow2(n) -> bool:
    return isinstance(n, int) and n > 0 and (n & (n - 1)) == 0


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's own switch, so a Triton fp32 product matches torch.matmul's
    precision: full fp32 ("ieee") unless torch.backends.cuda.matmul.allow_tf32 is set.
    16-bit inputs ignore it; they get Triton's default ("tf32")."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


ELEMENT_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}
SUPPORTED_DTYPES = tuple(ELEMENT_BYTES)


class KernelPlanError(ValueError):
    """A kernel launch plan (tile sizes, warps, stages) that cannot run: the verifier and the
    launchers raise it with the stage that failed ("validate", "compile", "launch"), the problem
    shape, the error and the plan's knobs, so the message says what to change."""

    def __init__(self, op: str, stage: str, shape, error: str, plan: dict):
        self.op = op
        self.stage = stage
        self.shape = tuple(shape)
        self.error = error
        self.plan = dict(plan)
        knobs = ", ".join(f"{k}={v}" for k, v in self.plan.items())
        super().__init__(f"{op}: {stage} failed at shape {self.shape}: {error} "
                         f"[plan: {knobs}]")


def compile_run(op: str, shape, run, plan: dict) -> None:
    """run(plan), the launch that compiles the plan's kernel: a Triton compiler error comes
    back as a KernelPlanError that names the op, the shape and the plan."""
    try:
        run(plan)
    except Exception as exc:
        if type(exc).__module__.startswith("triton"):
            raise KernelPlanError(op, "compile", shape, f"{type(exc).__name__}: {exc}",
                                  plan) from exc
        raise


def device_limits(device: torch.device | None) -> tuple[int, int]:
    """(shared memory bytes per block, max threads per block) of the device."""
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        smem = getattr(props, "shared_memory_per_block_optin", 0) or DEFAULT_SMEM_BYTES
        threads = getattr(props, "max_threads_per_block", 0) or DEFAULT_MAX_THREADS
        return int(smem), int(threads)
    return DEFAULT_SMEM_BYTES, DEFAULT_MAX_THREADS


def validate_plan(op: str, plan: dict, shape, smem_bytes, device: torch.device | None = None,
                  min_block: int = 16, required=()) -> None:
    """Raise KernelPlanError(stage="validate") for a plan the device cannot run.

    Checks: the knobs in `required` are present; every BLOCK_* knob is a power of two
    >= min_block (tl.dot needs >= 16 per side; tl.arange needs powers of two); a tile has at
    most 2**20 elements; GROUP_M >= 1; SPLIT_K, where given, a power of two >= 1; num_warps
    is a power of two with 32*num_warps <= the device's threads per block; num_stages >= 1;
    the plan's shared memory (`smem_bytes`, an int or a function of the plan) fits the
    device's per-block limit."""
    def bad(msg):
        raise KernelPlanError(op, "validate", shape, msg, plan)

    missing = [k for k in required if k not in plan]
    if missing:
        bad(f"missing knobs {missing}; a plan needs {list(required)}")
    if callable(smem_bytes):
        smem_bytes = smem_bytes(plan)
    memo = (op, tuple(sorted(plan.items())), smem_bytes, str(device), min_block)
    if memo in _VALID:
        return
    smem_limit, max_threads = device_limits(device)
    blocks = {k: v for k, v in plan.items() if k.startswith("BLOCK_")}
    for name, value in blocks.items():
        if not is_pow2(value):
            bad(f"{name}={value} is not a power of two (Triton tiles need powers of two)")
        if value < min_block:
            bad(f"{name}={value} is below the minimum {min_block} (tl.dot needs >= 16)")
    dims = sorted(blocks.values(), reverse=True)
    if len(dims) >= 2 and dims[0] * dims[1] > MAX_TILE_NUMEL:
        bad(f"a {dims[0]}x{dims[1]} tile exceeds Triton's {MAX_TILE_NUMEL} elements per block")
    if "GROUP_M" in plan and (not isinstance(plan["GROUP_M"], int) or plan["GROUP_M"] < 1):
        bad(f"GROUP_M={plan['GROUP_M']} must be an integer >= 1")
    if "SPLIT_K" in plan and not is_pow2(plan["SPLIT_K"]):
        bad(f"SPLIT_K={plan['SPLIT_K']} must be a power of two >= 1 (the number of slices "
            "the K loop is split into; 1 is no split)")
    warps = plan.get("num_warps", 4)
    if not is_pow2(warps) or 32 * warps > max_threads:
        bad(f"num_warps={warps} must be a power of two with 32*num_warps <= {max_threads} "
            "threads per block")
    stages = plan.get("num_stages", 1)
    if not isinstance(stages, int) or stages < 1:
        bad(f"num_stages={stages} must be an integer >= 1")
    if smem_bytes > smem_limit:
        bad(f"needs ~{smem_bytes} bytes of shared memory per block, the device allows "
            f"{smem_limit}; use smaller BLOCK_* or fewer num_stages")
    _VALID.add(memo)


_VALID: set = set()   # plans already validated (launchers validate on every call)


def launch_knobs(plan: dict) -> tuple[dict, dict]:
    """Split a plan into the kernel's constexpr meta-parameters and the launch options."""
    meta = {k: v for k, v in plan.items() if k not in ("num_warps", "num_stages")}
    opts = {"num_warps": plan.get("num_warps", 4), "num_stages": plan.get("num_stages", 1)}
    return meta, opts
