#!/usr/bin/env python3
"""What the matmul kernels compile to for a GPU, without one: each kernel compiled ahead of
time for sm_90 (Hopper) as Triton's JIT would specialize it, then ptxas's resource report.

Per plan: shared memory (num_stages x the tile's operands when the K loop is pipelined),
async copies into shared memory, wgmma instructions, registers per thread, spilled bytes and
ptxas's warnings (C7515: wgmma serialized, which costs the tensor-core pipeline).

The JIT specializes pointer arguments and sizes divisible by 16 and compiles unit strides in
as constants; compiled without that (a bare triton.compile) the loads go scalar and nothing
is pipelined, a different kernel from the one a GPU runs. Here pointers, sizes and the
non-unit strides are declared 16-divisible and the unit strides 1, as the GPT-2 and ResNet
shapes have them.

    python -m scripts.bench.aot_kernel_report                  # the default plans below
    python -m scripts.bench.aot_kernel_report --plan 128x256x64:8:4:cr
    python -m scripts.bench.aot_kernel_report --wide --plan 128x128x64:8:3:cr   # 192x192 tiles
    PYTHONPATH=/path/to/triton-3.6 python -m scripts.bench.aot_kernel_report   # another triton

Runs wherever Triton imports (its interpreter setting does not matter: the compile is ahead
of time); ptxas is the one bundled with Triton.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)   # compile, not interpret (read at triton import)

# (BLOCK_M x BLOCK_N x BLOCK_K, warps, stages, A and B layout): the plans that won GPT-2's
# and ResNet's products on the H200 (results/kernels/autotune-2026-12-02-h200-5.json)
DEFAULT_PLANS = ["128x128x64:4:4:rr", "128x256x64:8:4:cr", "128x128x64:8:4:cr",
                 "64x64x64:4:6:rr"]
_SIZES = ("M", "N", "K")


def parse_plan(text: str) -> dict:
    try:
        tile, warps, stages, layout = text.split(":")
        bm, bn, bk = (int(v) for v in tile.lower().split("x"))
        if layout not in ("rr", "rc", "cr", "cc"):
            raise ValueError(layout)
        return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=int(warps),
                    num_stages=int(stages), layout=layout)
    except ValueError:
        raise SystemExit(f"error: --plan {text!r} is not MxNxK:warps:stages:layout "
                         "(e.g. 128x256x64:8:4:cr; layout rr, rc, cr or cc for A and B)")


def compile_report(fn, signature: dict, constexprs: dict, unit_strides, num_warps: int,
                   num_stages: int, target) -> dict:
    """Compile fn as the JIT would (16-divisible pointers, sizes and strides; unit strides
    as constants) and read ptxas -v on its PTX."""
    import triton
    from triton.compiler import ASTSource
    consts = dict(constexprs, **{name: 1 for name in unit_strides})
    sig = {n: t for n, t in signature.items() if n not in unit_strides}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items()
             if t.startswith("*") or n in _SIZES or n.startswith("stride")}
    full = dict(sig, **{n: "constexpr" for n in consts})
    full = {n: full[n] for n in fn.arg_names if n in full}
    kernel = triton.compile(ASTSource(fn=fn, signature=full, constexprs=consts, attrs=attrs),
                            target=target, options={"num_warps": num_warps,
                                                    "num_stages": num_stages})
    ptx = kernel.asm["ptx"]
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        run = subprocess.run([ptxas, "-v", f"-arch=sm_{target.arch}a", f.name, "-o",
                              os.devnull], capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(f.name)
    if run.returncode:
        raise RuntimeError(f"ptxas failed: {run.stderr.strip()[:500]}")
    report = run.stderr
    registers = spills = 0
    for line in report.splitlines():
        if "Used" in line and "registers" in line:
            registers = int(line.split("Used")[1].split()[0])
        if "spill stores" in line:
            spills = int(line.split("bytes spill stores")[0].split(",")[-1].strip())
    warnings = sorted({w.split(")")[0].strip("(") for w in report.split("(C")[1:]})
    return dict(shared=kernel.metadata.shared, cp_async=ptx.count("cp.async.cg.shared"),
                tma=ptx.count("cp.async.bulk.tensor"), wgmma=ptx.count("wgmma.mma_async"),
                registers=registers, spill_bytes=spills,
                warnings=["C" + w for w in warnings])


def matmul_report(plan: dict, wide: bool = False, arch: int = 90) -> dict:
    """The tiled matmul kernel (kernels/matmul/tiled.py) for one plan, bf16, no epilogue (a
    backward product); with `wide`, the wide split-K kernel (WIDE=1, SPLIT_K=2,
    kernels/matmul/split_k.py) instead."""
    from triton.backends.compiler import GPUTarget

    from kernels.matmul import split_k, tiled
    la, lb = plan["layout"]
    sizes = ("M", "N", "K", "stride_am", "stride_ak", "stride_bk", "stride_bn")
    consts = dict(EVEN_K=True, DOT_PRECISION="tf32", BLOCK_M=plan["BLOCK_M"],
                  BLOCK_N=plan["BLOCK_N"], BLOCK_K=plan["BLOCK_K"], GROUP_M=8,
                  A_ROW=la == "r", B_ROW=lb == "r", DIV=16)
    units = ("stride_ak" if la == "r" else "stride_am", "stride_bn" if lb == "r" else
             "stride_bk")
    if wide:
        fn = split_k._matmul_split_k_wide_kernel
        signature = {"a_ptr": "*bf16", "b_ptr": "*bf16", "ws_ptr": "*fp32",
                     **{n: "i32" for n in sizes + ("stride_ws", "stride_wm")}}
        consts["SPLIT_K"] = 2
    else:
        fn = tiled._matmul_kernel
        signature = {"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*bf16", "bias_ptr": "*bf16",
                     "z_ptr": "*bf16", **{n: "i32" for n in sizes + ("stride_cm", "stride_cn")}}
        consts.update(HAS_BIAS=False, ACTIVATION=0, STORE_PREACT=False)
        units += ("stride_cn",)
    return compile_report(fn, signature, consts, units, plan["num_warps"], plan["num_stages"],
                          GPUTarget("cuda", arch, 32))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", nargs="*", default=DEFAULT_PLANS,
                    help="MxNxK:warps:stages:layout, e.g. 128x256x64:8:4:cr")
    ap.add_argument("--wide", action="store_true",
                    help="compile the wide split-K kernel (WIDE=1: tiles 3/2 BLOCK_M x 3/2 "
                    "BLOCK_N) instead of the tiled one")
    args = ap.parse_args(argv)
    try:
        import triton
    except Exception as exc:   # noqa: BLE001 - any import failure: say so, exit 2
        print(f"triton does not import ({exc!r}): nothing to compile", file=sys.stderr)
        return 2
    kind = "wide split-K (SPLIT_K=2)" if args.wide else "tiled"
    print(f"triton {triton.__version__}, sm_90, bf16, {kind} matmul kernel")
    print("| plan | shared KiB | cp.async | wgmma | registers | spilled bytes | "
          "ptxas warnings |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for text in args.plan:
        r = matmul_report(parse_plan(text), args.wide)
        print(f"| {text} | {r['shared'] / 1024:.0f} | {r['cp_async']} | {r['wgmma']} | "
              f"{r['registers']} | {r['spill_bytes']} | {', '.join(r['warnings']) or '-'} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
