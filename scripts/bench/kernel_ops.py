#!/usr/bin/env python3
"""Benchmark kernels/ against torch, measured in the same run; write JSON and Markdown.

GPU (default when CUDA is present), bf16:
  matmul     kernels.linear / kernels.matmul vs F.linear / torch.matmul: GPT-2 124M shapes
             (16384 tokens x 768->2304, 768->768, 768->3072, 3072->768), ResNet im2col GEMMs,
             4096^3; forward, and forward+backward for the GPT-2 linears
  attention  kernels.attention vs F.scaled_dot_product_attention on its flash backend,
             causal, head dim 64 and 128, T = 1k..8k at 16k tokens per batch; fwd+bwd and fwd
  sparse     kernels.block_sparse_linear at 90% block sparsity vs dense F.linear; 2:4
             (to_sparse_semi_structured) vs dense
CPU (--device cpu, this 2-core host): blocked attention vs torch SDPA, the cpu sparse path vs
dense, and peak memory of attention against T (blocked, SDPA, written-out reference).

Each row: shape, dtype, median ms (triton.testing.do_bench on GPU, wall clock on CPU),
TFLOP/s, GB/s, relative error vs a float64 reference, the torch time, ratio = torch_ms / ms
(> 1: ours faster), and the gpu name, date, torch/triton versions. On GPU the fwd+bwd cases
and the forward products also get a "<pass> graph" row: ours and torch's each captured in a
CUDA graph and replayed (kernels.autotune.graph_median_ms), the GPU time without the
per-call host cost, as a training step under torch.compile(mode="reduce-overhead") runs it. The Markdown adds each chosen plan's
kernel time from the autotune cache of the same run.

    python -m scripts.bench.kernel_ops --out results/kernels/bench.json --md results/kernels/bench.md
    python -m scripts.bench.kernel_ops --baseline results/kernels/bench-2026-11-23-h100.json
    python -m scripts.bench.kernel_ops --precompile --shard 0/4    # warm Triton's cache only
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch
import torch.nn.functional as F

import kernels
from kernels import autotune
from kernels import reference as ref
from scripts.bench import machine, table
from scripts.bench.timing import cpu_pair_ms, gpu_ms, per_call_us

GPT2 = [("gpt2 attn.c_attn", 16384, 768, 2304), ("gpt2 attn.c_proj", 16384, 768, 768),
        ("gpt2 mlp.c_fc", 16384, 768, 3072), ("gpt2 mlp.c_proj", 16384, 3072, 768)]
# ResNet 3x3 convolutions as im2col GEMMs at batch 16, 224x224 (M = B*H*W, K = C_in*9,
# N = C_out), and ResNet-50's classifier at batch 256
RESNET = [("resnet 3x3 conv 56x56x64", 50176, 576, 64),
          ("resnet 3x3 conv 28x28x128", 12544, 1152, 128),
          ("resnet 3x3 conv 14x14x256", 3136, 2304, 256),
          ("resnet 3x3 conv 7x7x512", 784, 4608, 512),
          ("resnet50 fc", 256, 2048, 1000)]
TARGET = {"matmul": 0.9, "attention": 0.9, "block_sparse": 4.0}


class Bench:
    def __init__(self, device: str, budget_s: float, precompile: bool = False, shard=(0, 1),
                 shapes=()):
        self.device = device
        self.shapes = list(shapes)          # (name, M, K, N): --shapes, replacing the grid
        self.cuda = device == "cuda"
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.start = time.perf_counter()
        self.budget = budget_s
        self.precompile = precompile
        self.shard = shard
        self.counter = 0
        self.meta = {
            "gpu": machine.device_name(self.cuda),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            **machine.versions(),
            "host": platform.node(), "backend": "triton" if self.cuda else "cpu",
            "loadavg_1m": round(os.getloadavg()[0], 2),   # other work on the host skews timings
            "threads": torch.get_num_threads()}

    def ms2(self, ours, theirs, grad_to_none=None) -> tuple[float, float]:
        """Median ms of ours and of torch's version, measured in the same way."""
        if self.cuda:
            return gpu_ms(ours, grad_to_none), gpu_ms(theirs, grad_to_none)
        return cpu_pair_ms(ours, theirs)

    def graph_row(self, label, ours, theirs, row: dict, flops: float) -> None:
        """On CUDA, a second row for the case of `row` (the timed-call row add returned):
        ours and torch's each replayed from a CUDA graph (autotune.graph_median_ms, which
        the tuner times plans with), pass "<pass> graph": the GPU time of all of the call's
        kernels without the host's per-call cost, as a training step under
        torch.compile(mode="reduce-overhead") runs them. A capture that fails is listed
        under Skipped with its error; the timed-call row stands."""
        if not self.cuda:
            return
        try:
            ms, tms = autotune.graph_median_ms(ours), autotune.graph_median_ms(theirs)
        except Exception as exc:   # e.g. a kernel that syncs the host cannot be captured
            self.skipped.append(f"{label} (CUDA graph): {type(exc).__name__}: {exc}")
            return
        same = {k: row[k] for k in ("op", "case", "layout", "shape", "dtype")}
        self.add(**same, **{"pass": row["pass"] + " graph"}, ms=ms, torch_ms=tms,
                 ratio=tms / ms, tflops=flops / ms / 1e9, torch_tflops=flops / tms / 1e9)

    def over_budget(self, label) -> bool:
        if time.perf_counter() - self.start > self.budget:
            self.skipped.append(label)
            print(f"skip (time budget): {label}", flush=True)
            return True
        return False

    def skip(self, label) -> bool:
        """Whether this process leaves the case out: in --precompile mode, another shard's;
        otherwise, past the time budget."""
        return not self.mine() if self.precompile else self.over_budget(label)

    def mine(self) -> bool:
        """In --precompile --shard k/n mode: is this case this process's?"""
        self.counter += 1
        return (self.counter - 1) % self.shard[1] == self.shard[0]

    def add(self, **row) -> dict:
        row = {**row, **self.meta}
        for key in ("ms", "torch_ms", "tflops", "torch_tflops", "gbps", "ratio", "err",
                    "torch_err"):
            if isinstance(row.get(key), float):
                row[key] = float(f"{row[key]:.5g}") if math.isfinite(row[key]) else None
        self.rows.append(row)
        print(f"{row['op']:12s} {row['case']:28s} {row['pass']:8s} ours {row['ms']} ms  "
              f"torch {row.get('torch_ms')} ms  ratio {row.get('ratio')}  err {row.get('err')}",
              flush=True)
        return row


def rnd(*shape, dtype, device, requires_grad=False, scale=1.0):
    t = torch.randn(*shape, device=device, dtype=torch.float32) * scale
    return t.to(dtype).requires_grad_(requires_grad)


# --- matmul -----------------------------------------------------------------------------------
def parse_shapes(texts) -> list[tuple]:
    """--shapes MxKxN ...: the user's own products, as (name, M, K, N)."""
    shapes = []
    for t in texts:
        dims = t.lower().split("x")
        if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise SystemExit(f"error: --shapes {t!r} is not MxKxN with positive integers "
                             f"(e.g. 256x2048x1000: M rows, K inner, N output columns)")
        shapes.append((t.lower(), *map(int, dims)))
    return shapes


def bench_matmul(b: Bench, dtype):
    dev = b.device
    # forward cases (name, M, K, N, layout), and the training-step cases (name, M, K, N)
    if b.shapes:        # the user's products, in both layouts and through a training step
        cases = [(name, m, k, n, layout) for name, m, k, n in b.shapes
                 for layout in ("matmul", "linear")]
        train_cases = b.shapes
    elif b.cuda:
        cases = [(name, m, k, n, "linear") for name, m, k, n in GPT2] + \
                [(name, m, k, n, "matmul") for name, m, k, n in GPT2] + \
                [(name, m, k, n, "matmul") for name, m, k, n in RESNET] + \
                [(name, m, k, n, "linear") for name, m, k, n in RESNET if "fc" in name] + \
                [("square 4096", 4096, 4096, 4096, "matmul")]
        train_cases = GPT2
    else:
        cases = [("cpu linear", 2048, 768, 768, "linear"),
                 ("cpu matmul", 2048, 768, 3072, "matmul")]
        train_cases = [("cpu linear", 2048, 768, 768)]
    for name, m, k, n, layout in cases:
        label = f"matmul {name} {layout}"
        if b.skip(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev)
        w = rnd(n, k, dtype=dtype, device=dev, scale=k ** -0.5)   # Linear weight [N, K]
        wt = w.t().contiguous()                                    # matmul operand [K, N]
        if layout == "linear":
            ours, theirs = (lambda: kernels.linear(x, w)), (lambda: F.linear(x, w))
        else:
            ours, theirs = (lambda: kernels.matmul(x, wt)), (lambda: torch.matmul(x, wt))
        if b.precompile:
            ours()
            continue
        ms, tms = b.ms2(ours, theirs)
        expected = x.double() @ w.double().t()
        flops = 2.0 * m * n * k
        nbytes = (m * k + k * n + m * n) * x.element_size()
        row = b.add(op="matmul", case=name, layout=layout, shape=[m, k, n],
                    dtype=str(dtype)[6:], **{"pass": "fwd"}, ms=ms, torch_ms=tms,
                    ratio=tms / ms, tflops=flops / ms / 1e9, torch_tflops=flops / tms / 1e9,
                    gbps=nbytes / ms / 1e6, err=ref.rel_err(ours(), expected),
                    torch_err=ref.rel_err(theirs(), expected))
        del expected
        # the same products replayed from CUDA graphs: on a slow host a timed call of a small
        # product measures the host (a GPT-2 fwd row read 0.40x on one lease, 0.92-1.0x on others)
        b.graph_row(label, ours, theirs, row, flops)

    # training step (forward + both backward matmuls), without a bias and with one (its
    # gradient a separate sum over dZ); then the fused epilogue on GPT-2's MLP
    variants = (("linear", False), ("linear+bias", True))
    for (name, m, k, n), (layout, has_bias) in itertools.product(train_cases, variants):
        label = f"linear fwd+bwd {name}" + (f" {layout}" if has_bias else "")
        if b.skip(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev, requires_grad=True)
        w = rnd(n, k, dtype=dtype, device=dev, scale=k ** -0.5, requires_grad=True)
        bias = rnd(n, dtype=dtype, device=dev, requires_grad=True) if has_bias else None
        gy = rnd(m, n, dtype=dtype, device=dev)
        leaves = [t for t in (x, w, bias) if t is not None]

        def step(f):
            return lambda: f(x, w, bias).backward(gy)
        if b.precompile:
            step(kernels.linear)()
            continue
        ms, tms = b.ms2(step(kernels.linear), step(F.linear), grad_to_none=leaves)
        for t in leaves:
            t.grad = None
        step(kernels.linear)()
        leaves6 = [ref.upcast(t) for t in leaves]
        F.linear(*leaves6).backward(gy.double())
        err = max(ref.rel_err(t.grad, t6.grad) for t, t6 in zip(leaves, leaves6))
        flops = 6.0 * m * n * k
        row = b.add(op="matmul", case=name, layout=layout, shape=[m, k, n],
                    dtype=str(dtype)[6:], **{"pass": "fwd+bwd"}, ms=ms, torch_ms=tms,
                    ratio=tms / ms, tflops=flops / ms / 1e9, torch_tflops=flops / tms / 1e9,
                    err=err)
        b.graph_row(label, step(kernels.linear), step(F.linear), row, flops)

    if b.cuda and not b.shapes:   # bias + gelu fused in the epilogue vs addmm then F.gelu
        name, m, k, n = GPT2[2]
        label = "matmul bias+gelu"
        if not b.skip(label):
            x = rnd(m, k, dtype=dtype, device=dev)
            wt = rnd(k, n, dtype=dtype, device=dev, scale=k ** -0.5)
            bias = rnd(n, dtype=dtype, device=dev)
            ours = lambda: kernels.matmul(x, wt, bias, activation="gelu")  # noqa: E731
            if b.precompile:
                ours()
            else:
                theirs = lambda: F.gelu(torch.addmm(bias, x, wt))  # noqa: E731
                ms, tms = b.ms2(ours, theirs)
                expected = ref.matmul(x.double(), wt.double(), bias.double(), "gelu")
                flops = 2.0 * m * n * k
                b.add(op="matmul", case=name + " +bias+gelu", layout="matmul",
                      shape=[m, k, n], dtype=str(dtype)[6:], **{"pass": "fwd"}, ms=ms,
                      torch_ms=tms, ratio=tms / ms, tflops=flops / ms / 1e9,
                      torch_tflops=flops / tms / 1e9, err=ref.rel_err(ours(), expected),
                      torch_err=ref.rel_err(theirs(), expected))


# --- attention --------------------------------------------------------------------------------
def _sdpa_flash(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _sdpa_cudnn(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench_attention(b: Bench, dtype):
    dev = b.device
    if b.cuda:
        shapes = [(16384 // t, 768 // d, t, d) for d in (64, 128) for t in (1024, 2048, 4096, 8192)]
        passes = ("fwd+bwd", "fwd")
        theirs_fn, theirs_name = _sdpa_flash, "sdpa flash"
    else:
        shapes = [(1, 4, t, 64) for t in (512, 1024, 2048)]
        passes = ("fwd+bwd", "fwd")
        theirs_fn, theirs_name = (lambda q, k, v, c: F.scaled_dot_product_attention(
            q, k, v, is_causal=c)), "sdpa"
    causal = True
    for bsz, h, t, d in shapes:
        for ps in passes:
            label = f"attention {bsz}x{h}x{t}x{d} {ps}"
            if b.skip(label):
                continue
            grad = ps == "fwd+bwd"
            q, k, v = (rnd(bsz, h, t, d, dtype=dtype, device=dev, requires_grad=grad)
                       for _ in range(3))
            do = rnd(bsz, h, t, d, dtype=dtype, device=dev)

            def make(f):
                if grad:
                    return lambda: f(q, k, v, causal).backward(do)
                return lambda: f(q, k, v, causal)
            ours = make(lambda q, k, v, c: kernels.attention(q, k, v, causal=c))
            if b.precompile:
                ours()
                continue
            ms, tms = b.ms2(ours, make(theirs_fn), grad_to_none=[q, k, v] if grad else None)
            # error on a slice (batch 0, heads 0-1): the float64 reference is O(T^2)
            sl = (slice(0, 1), slice(0, 2))
            qs, ks, vs = (ref.upcast(x[sl].detach().requires_grad_(grad)) for x in (q, k, v))
            expected = ref.attention(qs, ks, vs, causal=causal)
            out = kernels.attention(q, k, v, causal=causal)
            err = ref.rel_err(out[sl], expected)
            terr = ref.rel_err(theirs_fn(q, k, v, causal)[sl], expected)
            if grad:
                for x in (q, k, v):
                    x.grad = None
                out.backward(do)
                expected.backward(do[sl].double())
                err = max([err] + [ref.rel_err(x.grad[sl], xs.grad)
                                   for x, xs in ((q, qs), (k, ks), (v, vs))])
            del expected, out
            flops = 4.0 * bsz * h * t * t * d * (0.5 if causal else 1.0) * (3.5 if grad else 1.0)
            nbytes = (12 if grad else 4) * bsz * h * t * d * q.element_size()
            row = b.add(op="attention", case=f"causal d{d} T{t}", layout=theirs_name,
                        shape=[bsz, h, t, d], dtype=str(dtype)[6:], **{"pass": ps}, ms=ms,
                        torch_ms=tms, ratio=tms / ms, tflops=flops / ms / 1e9,
                        torch_tflops=flops / tms / 1e9, gbps=nbytes / ms / 1e6, err=err,
                        torch_err=terr)
            if grad:
                b.graph_row(label, ours, make(theirs_fn), row, flops)
            if b.cuda and grad:   # for reference: torch's cuDNN backend, faster than flash
                try:
                    cms = gpu_ms(make(_sdpa_cudnn), grad_to_none=[q, k, v])
                except Exception as exc:
                    b.skipped.append(f"{label} vs sdpa cudnn: {type(exc).__name__}: {exc}")
                    continue
                b.add(op="attention", case=f"causal d{d} T{t}", layout="sdpa cudnn",
                      shape=[bsz, h, t, d], dtype=str(dtype)[6:], **{"pass": ps}, ms=ms,
                      torch_ms=cms, ratio=cms / ms, tflops=flops / ms / 1e9,
                      torch_tflops=flops / cms / 1e9, err=err)


# --- sparse -----------------------------------------------------------------------------------
def bench_sparse(b: Bench, dtype):
    dev = b.device
    if b.cuda:
        cases = [(16384, 4096, 4096, 128, 0.9), (16384, 4096, 4096, 64, 0.9),
                 (8192, 8192, 8192, 128, 0.9), (16384, 768, 3072, 64, 0.9),
                 (16384, 3072, 768, 64, 0.9), (16384, 4096, 4096, 128, 0.5),
                 (16384, 4096, 4096, 128, 0.75), (16384, 4096, 4096, 128, 0.95)]
    else:
        cases = [(2048, 1024, 1024, 64, 0.9), (2048, 1024, 1024, 64, 0.5),
                 (2048, 768, 3072, 64, 0.9)]
    g = torch.Generator().manual_seed(0)
    for m, k, n, block, sparsity in cases:
        label = f"block_sparse {m}x{k}x{n} b{block} s{sparsity}"
        if b.skip(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev)
        w = ref.prune_blocks(torch.randn(n, k, generator=g) * k ** -0.5, block, sparsity,
                             generator=g).to(dev, dtype)
        ours = lambda: kernels.block_sparse_linear(x, w, block)  # noqa: E731
        if b.precompile:
            ours()
            continue
        ms, tms = b.ms2(ours, lambda: F.linear(x, w))
        expected = x.double() @ w.double().t()
        density = float((w != 0).float().mean())
        flops = 2.0 * m * n * k * density
        nbytes = (m * k + n * k * density + m * n) * x.element_size()
        b.add(op="block_sparse", case=f"{int(sparsity * 100)}% of {block}x{block} blocks",
              layout="vs dense F.linear", shape=[m, k, n], dtype=str(dtype)[6:],
              **{"pass": "fwd"}, ms=ms, torch_ms=tms, ratio=tms / ms, tflops=flops / ms / 1e9,
              torch_tflops=2.0 * m * n * k / tms / 1e9, gbps=nbytes / ms / 1e6,
              err=ref.rel_err(ours(), expected), torch_err=ref.rel_err(F.linear(x, w), expected))

    if not b.cuda or b.precompile:
        return
    sp = importlib.import_module("kernels.sparse")
    for m, k, n in ((16384, 768, 3072), (16384, 3072, 768), (8192, 8192, 8192)):
        label = f"2:4 {m}x{k}x{n}"
        if b.over_budget(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev)
        w = ref.prune_2_4(rnd(n, k, dtype=dtype, device=dev, scale=k ** -0.5))
        ok, why = sp.semi_structured_support(w)
        if not ok:
            b.skipped.append(f"{label}: {why}")
            continue
        try:
            ms = gpu_ms(lambda: sp.semi_structured_linear(x, w))
        except Exception as exc:   # cuSPARSELt/CUTLASS missing in this torch build
            b.skipped.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        tms = gpu_ms(lambda: F.linear(x, w))
        expected = x.double() @ w.double().t()
        b.add(op="semi_2_4", case="2:4 to_sparse_semi_structured", layout="vs dense F.linear",
              shape=[m, k, n], dtype=str(dtype)[6:], **{"pass": "fwd"}, ms=ms, torch_ms=tms,
              ratio=tms / ms, tflops=2.0 * m * n * k / 2 / ms / 1e9,
              torch_tflops=2.0 * m * n * k / tms / 1e9,
              err=ref.rel_err(sp.semi_structured_linear(x, w), expected))


# --- per-call host overhead --------------------------------------------------------------------
def bench_overhead(b: Bench, dtype):
    """Host time per call at tiny shapes (the GPU work is ~us): what a call costs in Python
    and launches, ours vs torch's."""
    if not b.cuda or b.precompile:
        return
    dev = b.device
    x = rnd(64, 64, dtype=dtype, device=dev, requires_grad=True)
    w = rnd(64, 64, dtype=dtype, device=dev, requires_grad=True)
    q, k, v = (rnd(1, 1, 64, 64, dtype=dtype, device=dev, requires_grad=True) for _ in range(3))

    cases = [
        ("linear 64x64x64 fwd", lambda: kernels.linear(x.detach(), w.detach()),
         lambda: F.linear(x.detach(), w.detach())),
        ("linear 64x64x64 fwd+bwd", lambda: kernels.linear(x, w).sum().backward(),
         lambda: F.linear(x, w).sum().backward()),
        ("attention 1x1x64x64 fwd", lambda: kernels.attention(q.detach(), k.detach(), v.detach()),
         lambda: _sdpa_flash(q.detach(), k.detach(), v.detach(), True)),
        ("attention 1x1x64x64 fwd+bwd", lambda: kernels.attention(q, k, v).sum().backward(),
         lambda: _sdpa_flash(q, k, v, True).sum().backward()),
    ]
    for name, ours, theirs in cases:
        us, tus = per_call_us(ours), per_call_us(theirs)
        b.add(op="overhead", case=name, layout="host us per call", shape=[64, 64],
              dtype=str(dtype)[6:], **{"pass": name.split()[-1]}, ms=us / 1e3,
              torch_ms=tus / 1e3, ratio=tus / us)


# --- CPU memory -------------------------------------------------------------------------------
def bench_memory(b: Bench):
    from kernels import verify
    for t in (1024, 2048, 4096, 8192, 16384):
        label = f"memory T{t}"
        if b.over_budget(label):
            continue
        row = {"op": "attention_memory", "case": f"causal d64 T{t}", "shape": [1, 1, t, 64],
               "dtype": "float32", "pass": "fwd+bwd"}
        for name in ("cpu", "torch", "reference"):
            if name == "reference" and t > 8192:
                row["reference_mib"] = None      # 4 x T^2 bytes per score matrix: skipped
                continue
            row[f"{name}_mib"] = round(verify.attention_peak_mb(name, t), 1)
        b.rows.append({**row, **b.meta})
        print(f"memory T={t}: {row}", flush=True)


# --- reports ----------------------------------------------------------------------------------
def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _verdict(label: str, rows: list, target: float, detail, best: bool = False) -> str:
    """One target line: the worst (or, with best, the best) ratio of rows, which row it is
    (detail(row)), and whether it reaches target."""
    r = (max if best else min)(rows, key=lambda r: r["ratio"] or 0)
    return (f"- {label}: {'best' if best else 'worst'} {fmt(r['ratio'])}x {detail(r)}, "
            f"target >= {target}x: {'met' if (r['ratio'] or 0) >= target else 'MISSED'}")


def summary(rows) -> list[str]:
    lines = []
    timings = (("", "timed calls"), (" graph", "CUDA-graph replay"))
    for suffix, how in timings:
        gpt2 = [r for r in rows if r["op"] == "matmul" and r["case"].startswith("gpt2")
                and r["pass"] == "fwd" + suffix and "+" not in r["case"]]
        if gpt2:
            lines.append(_verdict(f"matmul vs torch, GPT-2 shapes fwd, {how}", gpt2,
                                  TARGET["matmul"], lambda r: f"({r['case']} {r['layout']})"))
    for suffix, how in timings:
        resnet = [r for r in rows if r["op"] == "matmul" and r["case"].startswith("resnet")
                  and r["pass"] == "fwd" + suffix]
        if resnet:
            lines.append(_verdict(f"matmul vs torch, ResNet GEMMs fwd, {how}", resnet,
                                  TARGET["matmul"], lambda r: f"({r['case']})"))
    for suffix, how in timings:
        for d in (64, 128):
            att = [r for r in rows if r["op"] == "attention" and r["pass"] == "fwd+bwd" + suffix
                   and f"d{d} " in r["case"] and "flash" in r.get("layout", "")]
            if att:
                lines.append(_verdict(f"attention fwd+bwd vs {att[0]['layout']}, causal d{d}, "
                                      f"{how}", att, TARGET["attention"],
                                      lambda r: f"({r['case']})"))
    bs = [r for r in rows if r["op"] == "block_sparse" and r["case"].startswith("90%")]
    if bs:
        lines.append(_verdict("block-sparse at 90%", bs, TARGET["block_sparse"],
                              lambda r: f"dense at {'x'.join(map(str, r['shape']))} "
                                        f"({r['case']})", best=True))
    return lines


def kernel_only(rows, entries: dict) -> list[tuple]:
    """Per row, the tuner's own do_bench median of the chosen plan(s), from the autotune cache
    of the same run: the kernel's time without the per-call host cost. Attention fwd+bwd sums
    fwd + dK/dV + dQ (the small Delta kernel is not timed); block-sparse keys hold no
    density, so only the first density tuned for a shape (90%) is reported."""
    out, seen = [], set()
    for r in rows:
        op, shp, ps, lay = r["op"], r["shape"], r["pass"], r.get("layout") or ""
        kt = None
        if op == "matmul" and ps == "fwd" and "+" not in r["case"]:
            m, k, n = shp
            for layout in (("rc", "rr") if lay == "linear" else ("rr",)):
                e = entries.get(f"matmul|dtype={r['dtype']}|layout={layout}|"
                                f"M={autotune.bucket(m)}|N={n}|K={k}")
                if e:
                    out.append((r, f"{lay} ({layout})", e["ms"]))
            continue
        if op == "attention" and "flash" in lay and ps in ("fwd", "fwd+bwd"):
            bsz, h, t, d = shp
            key = (f"dtype={r['dtype']}|D={d}|causal=1|T={autotune.bucket(t)}|"
                   f"BH={autotune.bucket(bsz * h)}")
            parts = ["fwd"] + (["dkdv", "dq"] if ps == "fwd+bwd" else [])
            es = [entries.get(f"attention.{p}|{key}") for p in parts]
            kt = sum(e["ms"] for e in es) if all(es) else None
        elif op == "block_sparse":
            m, k, n = shp
            tile = 128 if "128x128" in r["case"] else 64
            key = f"block_sparse|dtype={r['dtype']}|tile={tile}|M={autotune.bucket(m)}|N={n}|K={k}"
            if key in seen:
                continue
            seen.add(key)
            e = entries.get(key)
            kt = e and e["ms"]
        if kt:
            out.append((r, lay, kt))
    return out


def markdown(b: Bench) -> str:
    m = b.meta
    out = [f"# kernels benchmark: {m['gpu']}", "",
           f"{m['date']}, torch {m['torch']}, triton {m['triton']}, host {m['host']} "
           f"(1-minute load average {m.get('loadavg_1m')} at the start, "
           f"{m.get('threads', 'default')} torch threads). "
           "ratio = torch ms / ours ms (> 1: ours faster), torch measured in the same run; "
           "err = ||out - ref|| / ||ref|| against float64 (attention: batch 0, heads 0-1; "
           "fwd+bwd: worst of output and gradients).", ""]
    out += ["## Targets", ""] + (summary(b.rows) or ["- (no rows)"]) + [""]
    sections = [("matmul", "matmul / linear"), ("attention", "attention"),
                ("block_sparse", "block-sparse linear"), ("semi_2_4", "2:4 semi-structured"),
                ("overhead", "host time per call at tiny shapes (ms columns)")]
    for op, title in sections:
        rows = [r for r in b.rows if r["op"] == op]
        if not rows:
            continue
        out += [f"## {title}", "",
                "| case | shape | dtype | pass | vs | ours ms | torch ms | ratio | ours TFLOP/s "
                "| torch TFLOP/s | err | torch err |",
                "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | "
                       f"{r['pass']} | {r.get('layout', '')} | {fmt(r['ms'])} | "
                       f"{fmt(r.get('torch_ms'))} | {fmt(r.get('ratio'))} | "
                       f"{fmt(r.get('tflops'))} | {fmt(r.get('torch_tflops'))} | "
                       f"{fmt(r.get('err'), 2)} | {fmt(r.get('torch_err'), 2)} |")
        out.append("")
    entries = getattr(b, "autotune_entries", None)
    if entries:
        ko = kernel_only(b.rows, entries)
        if ko:
            out += ["## Kernel time alone (the tuner's median for the chosen plan, same run)", "",
                    "The tuner times a plan as 10 calls replayed from a CUDA graph (warm L2, "
                    "no host cost; kernels.autotune.graph_median_ms); a timed call above adds "
                    "the host's per-call cost where it exceeds the kernel's. No torch column: "
                    "torch's time was taken call by call, so compare with the graph rows, "
                    "which time both sides alike. Caches tuned before 2026-11-23's graph "
                    "timing hold call-by-call medians.", "",
                    "| op | case | shape | pass | vs | kernel ms | timed call ms |",
                    "|---|---|---|---|---|---:|---:|"]
            for r, lay, kt in ko:
                out.append(f"| {r['op']} | {r['case']} | {'x'.join(map(str, r['shape']))} | "
                           f"{r['pass']} | {lay} | {fmt(kt)} | {fmt(r['ms'])} |")
            out.append("")
    mem = [r for r in b.rows if r["op"] == "attention_memory"]
    if mem:
        out += ["## CPU attention peak memory (fwd+bwd, B=H=1, D=64, fp32, MiB above the "
                "inputs)", "", "| T | blocked (cpu backend) | torch SDPA | written-out "
                "reference |", "|---:|---:|---:|---:|"]
        for r in mem:
            out.append(f"| {r['shape'][2]} | {fmt(r['cpu_mib'])} | {fmt(r['torch_mib'])} | "
                       f"{fmt(r['reference_mib'])} |")
        out.append("")
    if b.skipped:
        out += ["## Skipped", ""] + [f"- {s}" for s in b.skipped] + [""]
    return "\n".join(out)


def compare(rows, baseline_path: str, threshold: float = 0.05) -> list[str]:
    """Rows slower than the baseline report's same case by more than threshold."""
    with open(baseline_path) as f:
        old = json.load(f)
    old_rows = old["rows"] if isinstance(old, dict) else old
    key = lambda r: (r["op"], r["case"], r.get("layout"), tuple(r["shape"]), r["dtype"],
                     r["pass"])
    before = {key(r): r for r in old_rows if r.get("ms")}
    lines = []
    for r in rows:
        o = before.get(key(r))
        if not o or not r.get("ms"):
            continue
        change = r["ms"] / o["ms"] - 1
        if change > threshold:
            lines.append(f"REGRESSION {r['op']} {r['case']} {r['pass']} {r['shape']}: "
                         f"{o['ms']} -> {r['ms']} ms (+{change * 100:.0f}%), ratio "
                         f"{o.get('ratio')} -> {r.get('ratio')}")
    return lines


def _load_autotune(b: Bench, path=None):
    if path is None and b.cuda:
        from kernels import autotune
        path = autotune.cache_file(b.meta["gpu"])
    if path and Path(path).exists():
        b.autotune_entries = json.loads(Path(path).read_text()).get("entries", {})


def write(b: Bench, args):
    _load_autotune(b, getattr(args, "autotune", None))
    report = {"meta": b.meta, "rows": b.rows, "skipped": b.skipped,
              "summary": summary(b.rows)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(markdown(b))
    if getattr(args, "table", None):
        table.append(b.rows, b.meta, Path(args.out).name if args.out else "", args.table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None)
    ap.add_argument("--ops", nargs="*",
                    default=["matmul", "attention", "sparse", "overhead", "memory"])
    ap.add_argument("--out", default=None, help="JSON report")
    ap.add_argument("--md", default=None, help="Markdown report")
    ap.add_argument("--table", default=None, metavar="CSV",
                    help="append the rows to this table (results/benchmarks.csv)")
    ap.add_argument("--baseline", default=None, help="earlier JSON report: print regressions")
    ap.add_argument("--time-budget", type=float, default=1e9,
                    help="seconds; cases after it are skipped (reports still written)")
    ap.add_argument("--precompile", action="store_true",
                    help="only launch our kernels once per case (with KERNELS_AUTOTUNE=compile "
                         "this compiles every candidate plan); no timing, no reports")
    ap.add_argument("--shard", default="0/1", help="K/N with --precompile")
    ap.add_argument("--shapes", nargs="+", default=None, metavar="MxKxN",
                    help="matmul: these products (matmul and linear, forward and fwd+bwd) "
                         "instead of the GPT-2/ResNet grid, e.g. --shapes 256x2048x1000")
    ap.add_argument("--render", default=None,
                    help="re-render --md from an earlier JSON report (with --autotune: its "
                         "tuning cache) and exit")
    ap.add_argument("--autotune", default=None, help="autotune cache JSON for --render")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); on a host shared with other "
                         "work, 1 thread avoids OpenMP spin contention (40x slowdowns seen)")
    args = ap.parse_args(argv)

    if args.render:
        report = json.loads(Path(args.render).read_text())
        b = Bench("cpu", 0)      # rendering only: no device calls
        b.meta, b.rows, b.skipped = report["meta"], report["rows"], report.get("skipped", [])
        _load_autotune(b, args.autotune)
        Path(args.md).write_text(markdown(b))
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels.set_backend("triton" if device == "cuda" else "cpu")
    b = Bench(device, args.time_budget, args.precompile,
              tuple(int(x) for x in args.shard.split("/")), parse_shapes(args.shapes or []))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    print(f"# {b.meta}", flush=True)
    sections = {"matmul": bench_matmul, "attention": bench_attention, "sparse": bench_sparse,
                "overhead": bench_overhead}
    for op in args.ops:
        if op in sections:
            sections[op](b, dtype)
        elif op == "memory" and device == "cpu" and not args.precompile:
            bench_memory(b)
        if not args.precompile:
            write(b, args)          # after every section: a time-out keeps what was measured
    if args.precompile:
        print(f"precompiled shard {args.shard} in {time.perf_counter() - b.start:.0f} s")
        return 0
    print("\n" + "\n".join(summary(b.rows)))
    if args.baseline:
        regressions = compare(b.rows, args.baseline)
        print("\n".join(regressions) or f"no regressions against {args.baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
