"""Verify every kernel against the float64 reference (kernels/reference.py).

For each case of a grid (odd sizes, sizes below one tile, every dtype, causal and not):
fresh random inputs; outputs and gradients allocated NaN-filled (kernels.poisoned()), so an
element a kernel never writes fails; the forward output and every input gradient compared
with the float64 reference and its autograd by relative error ||out - ref|| / ||ref||, against
a per-dtype tolerance. NaN or Inf anywhere fails. A plan the device cannot run fails with the
structured KernelPlanError (stage, shape, error, plan knobs) in the result.

    python -m kernels.verify --backend triton --grid full --json verify.json
    python -m kernels.verify --backend cpu --grid small --ops attention

Exit status 1 when any case fails. docs/kernels.md describes the grids and tolerances.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from . import reference as ref
from ._common import KernelPlanError, poisoned

# relative-error tolerances (forward, backward). bf16 operands round at 2^-9 (~2e-3 per
# element, up to ~7e-3 for attention's P and dS casts in the interpreter, which truncates);
# fp16 at 2^-11; fp32 is full precision (Triton "ieee" dots unless torch allows tf32).
TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 4e-3),
    torch.bfloat16: (1e-2, 2e-2),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPS = ("matmul", "linear", "attention", "block_sparse_linear")


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    tol = TOLERANCES[dtype]
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return (5e-3, 5e-3)   # tf32 operands round at 2^-11
    return tol


@dataclass
class Case:
    op: str
    shape: tuple
    dtype: torch.dtype
    causal: bool | None = None          # attention
    bias: bool = False                  # matmul, linear, block_sparse_linear
    activation: str | None = None       # matmul
    block_size: int = 0                 # block_sparse_linear
    sparsity: float = 0.0               # block_sparse_linear

    def label(self) -> str:
        extra = []
        if self.causal is not None:
            extra.append("causal" if self.causal else "full")
        if self.bias:
            extra.append("bias")
        if self.activation:
            extra.append(self.activation)
        if self.block_size:
            extra.append(f"b{self.block_size} s{self.sparsity}")
        dims = "x".join(str(d) for d in _flat(self.shape))
        return f"{self.op} {dims} {str(self.dtype).replace('torch.', '')} {' '.join(extra)}"


@dataclass
class Result:
    case: str
    op: str
    stage: str            # forward | grad:<input> | validate | compile | launch
    shape: tuple
    dtype: str
    err: float
    tol: float
    ok: bool
    error: str | None = None
    plan: dict = field(default_factory=dict)
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def row(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("exception")
        d["err"] = None if not math.isfinite(self.err) else self.err
        return d


def _flat(shape):
    out = []
    for s in shape:
        out.extend(s if isinstance(s, tuple) else (s,))
    return out


# --- grids ----------------------------------------------------------------------------------
# matmul/linear: (M, K, N), M may be a tuple of leading dims; attention: (B, H, T_q, T_k, D);
# block_sparse_linear: (M, K, N, block_size, sparsity)
GRIDS = {
    "small": {   # CI: the Triton kernels in the CPU interpreter, every case well under 1 s
        "matmul": [(1, 1, 1), (5, 123, 123), (17, 33, 65), (64, 64, 64), (33, 100, 7),
                   ((2, 3), 40, 24)],
        "attention": [(1, 2, 1, 1, 64), (1, 2, 17, 17, 64), (2, 1, 45, 45, 64),
                      (1, 1, 70, 70, 128), (1, 1, 33, 33, 40), (1, 2, 20, 50, 32),
                      (1, 2, 50, 20, 32)],
        "block_sparse_linear": [(5, 64, 96, 16, 0.5), (37, 100, 70, 16, 0.7),
                                (64, 128, 128, 32, 0.9), (20, 64, 64, 8, 0.5)],
        "dtypes": ("fp32", "fp16", "bf16"),
    },
    "full": {    # GPU: large and odd shapes; fp16/fp32 on the first cases only (each dtype
                 # and edge pattern is another Triton compile, ~1-2 s each)
        "matmul": [(5, 123, 123), (127, 129, 131), ((8, 1024), 768, 3072), (16384, 768, 2304),
                   (1000, 1000, 1000), (3, 5000, 7), (4096, 4096, 4096)],
        "attention": [(2, 3, 127, 127, 64), (2, 2, 1023, 1023, 128), (1, 4, 4096, 4096, 64),
                      (1, 2, 4096, 4096, 128), (1, 2, 300, 700, 64), (1, 2, 2048, 2048, 40),
                      (1, 1, 1, 1, 64)],
        "block_sparse_linear": [(333, 250, 130, 16, 0.7), (1000, 768, 3072, 32, 0.5),
                                (4096, 4096, 4096, 64, 0.9), (16384, 768, 3072, 128, 0.9)],
        "dtypes": ("bf16", "fp16", "fp32"),
        "all_dtypes_first": 2,
        "matmul_variants": ((False, None), (True, "gelu")),
    },
    "short": {   # GPU: sequences and head dims below one tile, every dtype, causal and not
        "attention": [(2, 2, t, t, d) for t in (1, 2, 3, 7, 16, 31) for d in (16, 32, 64, 128)]
                     + [(1, 2, 3, 40, 64), (1, 2, 40, 3, 64), (1, 1, 5, 130, 128), (3, 1, 2, 9, 40)],
        "dtypes": ("fp32", "bf16", "fp16"),
    },
}
MATMUL_VARIANTS = ((False, None), (True, "gelu"), (True, "relu"))   # (bias, activation)


def cases(op: str, grid: str = "small", dtypes=None) -> list[Case]:
    spec = GRIDS[grid]
    names = dtypes or spec["dtypes"]
    first = spec.get("all_dtypes_first")
    out = []
    shapes = spec["matmul" if op == "linear" else op]
    for i, shape in enumerate(shapes):
        for name in names:
            if first is not None and i >= first and name != names[0]:
                continue
            dt = DTYPES[name]
            if op == "matmul":
                for bias, act in spec.get("matmul_variants", MATMUL_VARIANTS):
                    out.append(Case(op, shape, dt, bias=bias, activation=act))
            elif op == "linear":
                out.append(Case(op, shape, dt, bias=True))
            elif op == "attention":
                for causal in (True, False):
                    out.append(Case(op, shape, dt, causal=causal))
            else:
                m, k, n, b, s = shape
                out.append(Case(op, (m, k, n), dt, bias=True, block_size=b, sparsity=s))
    return out


# --- running one case -----------------------------------------------------------------------
def _inputs(case: Case, device, gen):
    dt = case.dtype

    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
        return t.to(device=device, dtype=dt).requires_grad_()

    if case.op in ("matmul", "linear"):
        m, k, n = case.shape
        lead = m if isinstance(m, tuple) else (m,)
        a = rnd(*lead, k, scale=1.0)
        b = rnd(k, n, scale=k ** -0.5) if case.op == "matmul" else rnd(n, k, scale=k ** -0.5)
        bias = rnd(n) if case.bias else None
        return {"a": a, "b": b, "bias": bias}
    if case.op == "attention":
        bsz, h, tq, tk, d = case.shape
        return {"q": rnd(bsz, h, tq, d), "k": rnd(bsz, h, tk, d), "v": rnd(bsz, h, tk, d)}
    m, k, n = case.shape
    w = torch.randn(n, k, generator=gen) * k ** -0.5
    w = ref.prune_blocks(w, case.block_size, case.sparsity, generator=gen)
    return {"x": rnd(m, k), "w": w.to(device=device, dtype=dt).requires_grad_(),
            "bias": rnd(n) if case.bias else None}


def _call(case: Case, impl, t: dict):
    if case.op == "matmul":
        return impl(t["a"], t["b"], t["bias"], case.activation)
    if case.op == "linear":
        return impl(t["a"], t["b"], t["bias"])
    if case.op == "attention":
        return impl(t["q"], t["k"], t["v"], case.causal)
    return impl(t["x"], t["w"], case.block_size, t["bias"])


def _reference(case: Case, t: dict):
    if case.op == "matmul":
        return ref.matmul(t["a"], t["b"], t["bias"], case.activation)
    if case.op == "linear":
        return ref.linear(t["a"], t["b"], t["bias"])
    if case.op == "attention":
        return ref.attention(t["q"], t["k"], t["v"], causal=case.causal)
    return ref.block_sparse_linear(t["x"], t["w"], case.block_size, t["bias"])


def _torch_same_dtype_errors(case: Case, t: dict, leaves: dict, grad_out, expected,
                             ref_grads, backward: bool):
    """stage -> the relative error of torch's own computation of the case in the case's
    dtype (kernels/reference.py on the unconverted inputs) against float64; computed on first
    use (only a check over its table tolerance asks), 0.0 for fp32 (its table is tight)."""
    cache: dict = {}

    def err(stage: str) -> float:
        if case.dtype == torch.float32:
            return 0.0
        if not cache:
            low = {k: (v.detach().requires_grad_(v.requires_grad) if v is not None else None)
                   for k, v in t.items()}
            with torch.no_grad() if not backward else contextlib.nullcontext():
                out = _reference(case, low)
            cache["forward"] = ref.rel_err(out, expected)
            if backward:
                names = list(leaves)
                gs = torch.autograd.grad(out, [low[k] for k in names], grad_out,
                                         allow_unused=True)
                for name, g, rg in zip(names, gs, ref_grads):
                    if g is not None and rg is not None:
                        cache[f"grad:{name}"] = ref.rel_err(g, rg)
        return cache.get(stage, 0.0)
    return err


def run_case(case: Case, impl, device="cpu", seed: int | None = None,
             backward: bool = True) -> list[Result]:
    """Check impl on one case: forward, then each input gradient. impl has the public
    signature of case.op (kernels.matmul, kernels.linear, kernels.attention,
    kernels.block_sparse_linear)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed if seed is not None
                                        else int.from_bytes(os.urandom(4), "little"))
    fwd_tol, bwd_tol = tolerance(case.dtype)
    shape = tuple(_flat(case.shape))
    dt = str(case.dtype).replace("torch.", "")
    label = case.label()

    def fail(stage, exc, plan=None):
        return Result(label, case.op, getattr(exc, "stage", stage), shape, dt, math.inf,
                      fwd_tol, False, f"{type(exc).__name__}: {exc}",
                      getattr(exc, "plan", plan or {}), exc)

    t = _inputs(case, device, gen)
    leaves = {k: v for k, v in t.items() if v is not None}
    try:
        with poisoned():
            out = _call(case, impl, t)
            grad_out = torch.randn(out.shape, generator=gen).to(device=device,
                                                                  dtype=out.dtype)
            grads = (torch.autograd.grad(out, list(leaves.values()), grad_out,
                                         allow_unused=True) if backward else ())
    except KernelPlanError as exc:
        return [fail(exc.stage, exc)]
    except Exception as exc:   # a launch error is a failed case, not a crashed verifier
        return [fail("launch", exc)]

    r = {k: ref.upcast(v) for k, v in t.items()}
    expected = _reference(case, r)
    rl = [r[k] for k in leaves]
    ref_grads = (torch.autograd.grad(expected, rl, grad_out.to(torch.float64), allow_unused=True)
                 if backward else ())
    torch_errs = _torch_same_dtype_errors(case, t, leaves, grad_out, expected, ref_grads,
                                          backward)
    results = []

    def check(stage, got, want, table_tol):
        # within the dtype's tolerance, or within twice the error torch itself makes on this
        # case in this dtype: one-element bf16 gelu gradients round z, dZ and the product
        # (2.5e-2 against float64), more than a tolerance sized for sums can allow
        err = ref.rel_err(got, want)
        tol = max(table_tol, 2.0 * torch_errs(stage)) if err > table_tol else table_tol
        results.append(Result(label, case.op, stage, shape, dt, err, tol,
                              math.isfinite(err) and err <= tol))

    check("forward", out, expected, fwd_tol)
    for name, g, rg in zip(leaves, grads, ref_grads):
        if rg is None:
            continue
        if g is None:
            results.append(Result(label, case.op, f"grad:{name}", shape, dt, math.inf,
                                  bwd_tol, False, "no gradient returned"))
            continue
        check(f"grad:{name}", g, rg, bwd_tol)
    return results


def verify(ops=OPS, impls: dict | None = None, grid: str = "small", device="cpu",
           dtypes=None, backward: bool = True, seed: int | None = None,
           stop_on_first: bool = False, progress=None, shard=(0, 1)) -> list[Result]:
    """Run the grid for each op with impls[op] (default: the public kernels.<op>).
    shard=(k, n) runs every n-th case starting at k (parallel processes share the work)."""
    import kernels
    impls = impls or {}
    results = []
    todo = [(op, c) for op in ops for c in cases(op, grid, dtypes)]
    for i, (op, case) in enumerate(todo):
        if i % shard[1] != shard[0]:
            continue
        impl = impls.get(op) or getattr(kernels, op)
        rs = run_case(case, impl, device, None if seed is None else seed + i, backward)
        results.extend(rs)
        if progress:
            progress(case, rs)
        if stop_on_first and not all(r.ok for r in rs):
            return results
    return results


def caught(results: list[Result]) -> bool:
    """True when at least one result failed (what a mutation test wants)."""
    return any(not r.ok for r in results)


def format_failures(results: list[Result], limit: int = 20) -> str:
    bad = [r for r in results if not r.ok]
    lines = [f"{r.case} [{r.stage}]: err={r.err:.3g} tol={r.tol:g}"
             + (f" -- {r.error}" if r.error else "") for r in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"... and {len(bad) - limit} more")
    return "\n".join(lines)


# --- memory of the cpu attention path ------------------------------------------------------
_PEAK_CHILD = r"""
import sys, torch
torch.set_num_threads(1)   # memory does not depend on it; time does, on a shared host
def status(field):   # kB; VmHWM is this process's own peak (ru_maxrss would include the
    with open("/proc/self/status") as f:   # parent's size, inherited through fork+exec)
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))
backend, T, D, causal = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
import importlib
from kernels import reference
run = {"reference": lambda q, k, v: reference.attention(q, k, v, causal),
       "torch": lambda q, k, v: reference.sdpa(q, k, v, causal),
       "cpu": lambda q, k, v: importlib.import_module("kernels.attention").cpu_attention(
           q, k, v, causal)}[backend]
def inputs(t):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 1, t, D, generator=g).requires_grad_() for _ in range(3)]
warm = inputs(min(T, 1024))   # lazy imports, thread pools, BLAS workspaces into the baseline
run(*warm).sum().backward()
q, k, v = inputs(T)
base = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                    # reset VmHWM to the current RSS
except OSError:
    pass
out = run(q, k, v)
out.backward(torch.ones_like(out))
print((status("VmHWM") - base) / 1024.0)
"""


def attention_peak_mb(backend: str, T: int, D: int = 64, causal: bool = True) -> float:
    """Peak extra resident memory (MiB) of one attention forward+backward at B=H=1 on CPU,
    measured in a fresh process (VmHWM after minus VmRSS before, inputs already allocated).
    backend: "cpu" (blocked), "torch" (F.scaled_dot_product_attention) or "reference"
    (scores written out, O(T^2))."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, backend, str(T), str(D),
                           "1" if causal else "0"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"attention_peak_mb({backend!r}, {T}) failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.split()[-1])


# --- command line ---------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kernels.verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="triton", choices=("torch", "triton", "cpu"))
    ap.add_argument("--grid", default=None, choices=sorted(GRIDS),
                    help="default: full on a GPU, small on CPU")
    ap.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS)
    ap.add_argument("--dtypes", nargs="*", default=None, choices=sorted(DTYPES))
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", default=None, help="write every result as JSON here")
    ap.add_argument("--shard", default="0/1", help="K/N: run every N-th case from K")
    args = ap.parse_args(argv)

    import kernels
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    grid = args.grid or ("full" if device == "cuda" else "small")
    kernels.set_backend(args.backend)
    start = time.perf_counter()

    def progress(case, rs):
        worst = max((r.err for r in rs if math.isfinite(r.err)), default=math.inf)
        flag = "ok  " if all(r.ok for r in rs) else "FAIL"
        print(f"{flag} {case.label():55s} worst err {worst:.2e}", flush=True)

    results = verify(args.ops, grid=grid, device=device, dtypes=args.dtypes,
                     backward=not args.no_backward, seed=args.seed, progress=progress,
                     shard=tuple(int(x) for x in args.shard.split("/")))
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)}/{len(results)} checks passed "
          f"({args.backend} backend, {grid} grid, {device}, {time.perf_counter() - start:.0f} s)")
    if bad:
        print(format_failures(bad))
    if args.json:
        meta = {"backend": args.backend, "grid": grid, "device": device,
                "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "torch": torch.__version__}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": [r.row() for r in results]}, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
