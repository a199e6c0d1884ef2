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
per-call host cost, as a training step under torch.compile(mode="reduce-overhead") runs it.
The Markdown adds each chosen plan's kernel time from the autotune cache of the same run.

    python -m scripts.bench.kernel_ops --out results/kernels/bench.json --md results/kernels/bench.md
    python -m scripts.bench.kernel_ops --baseline results/kernels/bench-2026-11-23-h100.json
    python -m scripts.bench.kernel_ops --precompile --shard 0/4    # warm Triton's cache only

The cases are in kernel_cases.py, the run's state and how a case is timed in
kernel_harness.py, the reports in kernel_report.py; this file is the command line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import kernels
from scripts.bench.kernel_cases import (bench_attention, bench_matmul, bench_memory,
                                        bench_overhead, bench_sparse, parse_shapes)
from scripts.bench.kernel_harness import Bench
from scripts.bench.kernel_report import compare, load_autotune, markdown, summary, write

SECTIONS = {"matmul": bench_matmul, "attention": bench_attention, "sparse": bench_sparse,
            "overhead": bench_overhead}


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
        load_autotune(b, args.autotune)
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
    for op in args.ops:
        if op in SECTIONS:
            SECTIONS[op](b, dtype)
        elif op == "memory" and device == "cpu" and not args.precompile:
            bench_memory(b)
        if not args.precompile:
            # after every section: a time-out keeps what was measured
            write(b, args.out, args.md, args.table, args.autotune)
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
