"""Guarded Triton import, shared by the op modules.

kernels/ must import, and its "torch" and "cpu" backends must work, where Triton is missing
or broken (a CPU-only wheel, a mismatched version). Every op module takes `triton`/`tl` from
here and defines its @triton.jit kernels only under `if HAS_TRITON:`.

Interpreter mode: with TRITON_INTERPRET=1 set before Triton is imported, the kernels run on
CPU tensors through Triton's interpreter (how CI tests them). The variable is read once, when
this module is imported, because @triton.jit reads it when a kernel is decorated.
"""
from __future__ import annotations

import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
    IMPORT_ERROR: BaseException | None = None
    VERSION = triton.__version__
except Exception as exc:  # missing or broken install: the torch/cpu backends still work
    triton = None
    tl = None
    HAS_TRITON = False
    IMPORT_ERROR = exc
    VERSION = "none"


if HAS_TRITON:
    @triton.jit
    def tile_ids(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
        """(pid_m, pid_n) of tile_id in grouped launch order (tutorial 03): GROUP_M tile-rows
        sweep the tile-columns together, so they share B tiles in L2. Shared by the matmul
        kernels (kernels/matmul/)."""
        num_pid_in_group = GROUP_M * num_pid_n
        first_pid_m = (tile_id // num_pid_in_group) * GROUP_M
        group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
        pid_m = first_pid_m + ((tile_id % num_pid_in_group) % group_size_m)
        pid_n = (tile_id % num_pid_in_group) // group_size_m
        return pid_m, pid_n

    @triton.jit
    def apply_activation(acc, ACTIVATION: tl.constexpr):
        """The fused activation of the matmul epilogues: 0 none, 1 relu, 2 exact-erf gelu
        (as nn.GELU()), in fp32."""
        if ACTIVATION == 1:
            acc = tl.maximum(acc, 0.0)
        elif ACTIVATION == 2:
            acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        return acc


class TritonUnavailable(RuntimeError):
    """The triton backend was asked for but Triton cannot run here."""


def require(what: str = "the triton backend") -> None:
    if not HAS_TRITON:
        raise TritonUnavailable(
            f"{what} needs Triton, which failed to import ({IMPORT_ERROR!r}); "
            "install triton matching your torch, or set kernel_backend to 'torch' or 'cpu' "
            "(CONFIG_KERNEL_BACKEND_TORCH / CONFIG_KERNEL_BACKEND_CPU; docs/kernels.md)")


def _patch_interpreter_bf16_dot() -> None:
    """Work around a Triton interpreter bug (seen in triton 3.8): the interpreter stores
    bfloat16 as raw uint16 bits and its create_dot hands those bits to np.matmul, so a bf16
    tl.dot returns garbage (relative error ~1e10 on a 16x16 product). Upcast bf16 operands to
    fp32 first; the GPU path is untouched. Our kernels never do other arithmetic on bf16 values
    (they convert to fp32 first), which the interpreter would get wrong the same way."""
    try:
        import numpy as np
        from triton.runtime import interpreter as _interp
    except Exception:
        return
    builder = getattr(_interp, "InterpreterBuilder", None)
    convert = getattr(_interp, "_convert_float", None)
    handle = getattr(_interp, "TensorHandle", None)
    if builder is None or convert is None or handle is None or \
            getattr(builder.create_dot, "_kernels_bf16_fix", False):
        return
    original = builder.create_dot

    def up(x):
        if x.dtype == tl.bfloat16:
            return handle(convert(x.data, tl.bfloat16, tl.float32, None).view(np.float32),
                          tl.float32)
        return x

    def create_dot(self, a, b, d, *args, **kwargs):
        return original(self, up(a), up(b), d, *args, **kwargs)

    create_dot._kernels_bf16_fix = True
    builder.create_dot = create_dot


if HAS_TRITON and INTERPRET:
    _patch_interpreter_bf16_dot()
