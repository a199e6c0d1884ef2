"""The state of one kernels-vs-torch benchmark run (scripts/bench/kernel_ops.py): the rows
measured, the cases skipped, the time budget, the --precompile shard, and how one case is
timed, ours against torch's in the same way (timed calls; on CUDA also CUDA-graph replay).
The cases are in kernel_cases.py, the reports in kernel_report.py."""
from __future__ import annotations

import datetime
import math
import os
import platform
import time

import torch

from kernels import autotune
from scripts.bench import machine
from scripts.bench.timing import cpu_pair_ms, gpu_ms


class Bench:
    """One run: its rows (add), skipped cases, time budget and --precompile shard."""

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
        self.autotune_entries: dict = {}    # the run's tuning cache, for the report
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
