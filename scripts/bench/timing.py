"""The bench tools' clocks: a GPU call's median time (triton.testing.do_bench), two CPU
callables timed alternately, and the host time per call of a tiny-shape call.

kernels.autotune owns the tuner's own clocks (graph_median_ms, call_median_ms); these are
the benchmarks', which also reset gradients between timed fwd+bwd calls."""
from __future__ import annotations

import statistics
import time

import torch


def gpu_ms(fn, grad_to_none=None) -> float:
    """Median ms of one call of fn on the GPU, timed call by call with CUDA events by
    triton.testing.do_bench; the tensors of grad_to_none get .grad = None before each call."""
    from triton.testing import do_bench
    fn()                      # first call compiles and tunes: keep it out of the estimate
    torch.cuda.synchronize()
    try:
        return float(do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                              return_mode="median"))
    except TypeError:         # an older do_bench without return_mode
        return float(do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                              quantiles=[0.5])[0])


def cpu_pair_ms(ours, theirs, rounds=7) -> tuple[float, float]:
    """Median wall-clock ms of each, timed alternately: on a host shared with other jobs the
    load drifts, and timing one after the other let that drift show up as a 2x "ratio"
    between two calls of the same F.linear."""
    ours()
    theirs()
    a, b = [], []
    for _ in range(rounds):
        for fn, out in ((ours, a), (theirs, b)):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(a), statistics.median(b)


def per_call_us(fn, n: int = 300, sync=torch.cuda.synchronize) -> float:
    """Wall-clock us per call over n calls after one warm-up, sync() before and after: at
    tiny shapes (GPU work of a few us) this is the host's cost of a call, Python and
    launches. On the CPU pass sync=lambda: None."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n * 1e6
