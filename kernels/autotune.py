"""Autotuning with a persistent JSON cache.

Each op gives a filtered list of candidate launch plans for a problem; `pick` times them all
(a grid search over the filtered list) the first time a (device, op, dtype, layout, shape
bucket) key is seen, keeps the fastest, and writes it to a JSON file, so a second run of the
same shapes does not tune again:

    $KERNELS_CACHE_DIR (default ~/.cache/knlp-kernels)/
        <device name>__torch-<version>__triton-<version>.json

A new torch or Triton version starts a new file (old timings say nothing about a new
compiler). KERNELS_AUTOTUNE=0 skips tuning and uses each op's first (default) plan;
KERNELS_AUTOTUNE=compile only compiles every candidate (to warm Triton's cache in parallel).

Command line (docs/kernels.md; `make autotune` calls it):
    python -m kernels.autotune --preset gpt2 --dtype bf16
    python -m kernels.autotune --shapes linear:16384x768x3072 attention:16x12x1024x64:causal
    python -m kernels.autotune --show
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from . import _triton
from ._common import KernelPlanError

ENV_DIR = "KERNELS_CACHE_DIR"
ENV_SWITCH = "KERNELS_AUTOTUNE"
DEFAULT_DIR = "~/.cache/knlp-kernels"


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "unknown"


def cache_file(device_name: str) -> Path:
    return cache_dir() / (f"{_slug(device_name)}__torch-{_slug(torch.__version__)}"
                          f"__triton-{_slug(_triton.VERSION)}.json")


def mode() -> str:
    """KERNELS_AUTOTUNE, lower-cased: "1" (default) tunes, "0" takes each op's first plan,
    "compile" only compiles every plan (Autotuner.pick)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower()


def bucket(n: int) -> int:
    """Shape bucket of a dimension that varies between calls (tokens): n rounded up to its
    top three bits, four buckets an octave (512, 640, 768, 896, 1024, 1280, ...), so a plan
    tuned at one size serves sizes up to 25% larger. Not the next power of two: GPT-2's
    dW of its [2304, 768] and [3072, 768] weights (M = out features) would share the plan
    tuned at 2304, which at 3072 runs two waves (174 us vs 155 for 3072's own plan)."""
    n = int(n)
    if n <= 4:
        return max(1, n)
    shift = n.bit_length() - 3
    return -(-n >> shift) << shift


def plan_str(plan: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in plan.items())


def median_ms(fn, warmup_ms: int = 10, rep_ms: int = 40) -> float:
    """Median GPU time of one call of fn in milliseconds (graph_median_ms); where fn cannot
    be captured in a CUDA graph, triton.testing.do_bench's per-call timing."""
    try:
        return graph_median_ms(fn)
    except Exception:
        torch.cuda.synchronize()
    return call_median_ms(fn, warmup_ms, rep_ms)


def graph_median_ms(fn, calls: int = 10, rounds: int = 12) -> float:
    """Median GPU time of one call of fn: `calls` calls captured in one CUDA graph, its replay
    timed with CUDA events `rounds` times. Timing calls one by one also times the host that
    launches them whenever the host is slower than the kernel (a slow host's 0.11 ms per
    call from Python ranked the plans of a 12 us GEMM by host noise)."""
    fn()                                   # compiles (never inside a capture)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):          # torch's recipe: warm up on a side stream
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def call_median_ms(fn, warmup_ms: int = 10, rep_ms: int = 40) -> float:
    """Median time of fn in milliseconds, timed call by call with CUDA events by
    triton.testing.do_bench (includes the host's per-call cost where it exceeds the GPU's)."""
    from triton.testing import do_bench
    try:
        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    except TypeError:  # an older do_bench without return_mode
        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5])[0])


class Autotuner:
    def __init__(self):
        self._memory: dict[tuple[str, str], dict] = {}
        self._fast: dict[tuple, dict] = {}
        self.tuned: list[str] = []     # keys tuned by this process (tests read it)

    # --- the JSON file ----------------------------------------------------------------
    @staticmethod
    def load(path: Path) -> dict:
        try:
            with open(path) as f:
                data = json.load(f)
            return data.get("entries", {}) if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            print(f"kernels.autotune: ignoring unreadable cache {path}: {exc}", file=sys.stderr)
            return {}

    @staticmethod
    def save(path: Path, device_name: str, key: str, entry: dict) -> None:
        """Merge one entry into the file: re-read it first (another process, a DDP rank, may
        have written meanwhile), write a temp file, fsync, rename: readers never see half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = Autotuner.load(path)
        entries[key] = entry
        data = {"device": device_name, "torch": torch.__version__, "triton": _triton.VERSION,
                "entries": dict(sorted(entries.items()))}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # --- choosing a plan --------------------------------------------------------------
    def pick(self, op: str, key_fields: dict, candidates: list[dict], run,
             device: torch.device) -> dict:
        """The fastest of `candidates` for this key; `run(plan)` launches the kernel once.

        KERNELS_AUTOTUNE=0: the first candidate, nothing timed. KERNELS_AUTOTUNE=compile:
        launch every candidate once (fills Triton's compile cache, e.g. from several
        processes in parallel before a benchmark) and use the first; nothing is cached."""
        if not candidates:
            raise ValueError(f"{op}: no candidate plans to tune")
        how = mode()
        if device.type != "cuda" or len(candidates) == 1 or how == "0":
            return candidates[0]
        fast = (op, tuple(key_fields.items()), device.index, how)
        if fast in self._fast:          # per-call path: no file names, no string keys
            return self._fast[fast]
        if how == "compile":
            for plan in candidates:
                try:
                    run(plan)
                except Exception as exc:
                    print(f"kernels.autotune: {op} {plan_str(plan)}: {type(exc).__name__}",
                          file=sys.stderr)
            return candidates[0]
        plan = self.lookup_or_tune(torch.cuda.get_device_name(device), op, key_fields,
                                   candidates, lambda plan: median_ms(lambda: run(plan)))
        self._fast[fast] = plan
        return plan

    def lookup_or_tune(self, device_name: str, op: str, key_fields: dict,
                       candidates: list[dict], bench) -> dict:
        """The cached plan for (device, op, key), else time every candidate and cache the best.

        A cached plan that is no longer a candidate (the code changed) re-tunes the key. A
        candidate the entry never timed (a plan family added since, or switched on) is timed
        against the cached plan, and the entry keeps the timings of both rounds: products
        whose sizes share a key but not every candidate then stop re-tuning after one round
        each."""
        key = op + "|" + "|".join(f"{k}={v}" for k, v in key_fields.items())
        path = cache_file(device_name)
        memo = (str(path), key)
        if memo in self._memory:
            return self._memory[memo]
        entry = self.load(path).get(key)
        before, errors = {}, {}
        if entry and entry.get("config") in candidates:
            before = dict(entry.get("timings") or {})
            untimed = [p for p in candidates if plan_str(p) not in before]
            if not untimed:
                self._memory[memo] = entry["config"]
                return entry["config"]
            candidates = [entry["config"]] + untimed   # the cached plan is timed again
            errors = dict(entry.get("errors") or {})

        start = time.perf_counter()
        timings = {}
        for plan in candidates:
            try:
                timings[plan_str(plan)] = bench(plan)
            except Exception as exc:  # compile failure, out of shared memory: skip the plan
                timings[plan_str(plan)] = math.inf
                first_line = (str(exc).splitlines() or [""])[0][:200]
                errors[plan_str(plan)] = f"{type(exc).__name__}: {first_line}"
        best = min(candidates, key=lambda p: timings[plan_str(p)])
        if math.isinf(timings[plan_str(best)]):
            raise KernelPlanError(op, "compile", tuple(key_fields.values()),
                                  f"no candidate plan ran: {errors}", best)
        entry = {"config": best, "ms": timings[plan_str(best)],
                 "timings": {**before, **{k: (None if math.isinf(v) else round(v, 5))
                                         for k, v in timings.items()}},
                 "errors": errors, "tune_s": round(time.perf_counter() - start, 2),
                 "date": datetime.datetime.now().isoformat(timespec="seconds")}
        self.save(path, device_name, key, entry)
        self._memory[memo] = best
        self.tuned.append(key)
        print(f"kernels.autotune: {key}: {plan_str(best)} ({entry['ms']:.4f} ms, "
              f"{len(candidates)} plans in {entry['tune_s']} s) -> {path}", file=sys.stderr)
        return best


TUNER = Autotuner()


def pick(op, key_fields, candidates, run, device):
    return TUNER.pick(op, key_fields, candidates, run, device)


# --- command line ------------------------------------------------------------------------
PRESETS = {
    # GPT-2 124M at B16 x T1024 = 16384 tokens: qkv, attn proj, mlp fc, mlp proj, attention.
    "gpt2": ["linear:16384x768x2304", "linear:16384x768x768", "linear:16384x768x3072",
             "linear:16384x3072x768", "attention:16x12x1024x64:causal"],
    # ResNet 3x3 convolutions as im2col GEMMs at batch 16 (224x224): M = B*H*W,
    # K = C_in*9, N = C_out; and the ResNet-50 classifier.
    "resnet": ["matmul:50176x576x64", "matmul:12544x1152x128", "matmul:3136x2304x256",
               "matmul:784x4608x512", "linear:256x2048x1000"],
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _dims(text: str) -> list[int]:
    return [int(x) for x in text.lower().split("x")]


def run_shape(spec: str, dtype: torch.dtype, backward: bool = True) -> None:
    """Run one op at one shape on the triton backend (forward, and backward unless told
    otherwise), which tunes every kernel it launches that has no cached plan yet."""
    import kernels
    op, _, rest = spec.partition(":")
    parts = rest.split(":")
    dev = torch.device("cuda")
    kernels.set_backend("triton")
    g = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, device=dev, dtype=dtype, generator=g).requires_grad_(backward)

    if op in ("matmul", "linear"):
        m, k, n = _dims(parts[0])
        if op == "matmul":
            out = kernels.matmul(rand(m, k), rand(k, n))
        else:
            out = kernels.linear(rand(m, k), rand(n, k), rand(n))
    elif op == "attention":
        b, h, t, d = _dims(parts[0])
        causal = "full" not in parts[1:]
        out = kernels.attention(rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d),
                                causal=causal)
    elif op == "bsmm":
        from .reference import prune_blocks
        m, k, n = _dims(parts[0])
        block = next((int(p[1:]) for p in parts[1:] if p.startswith("b")), 64)
        sparsity = next((float(p[1:]) for p in parts[1:] if p.startswith("s")), 0.9)
        w = prune_blocks(torch.randn(n, k, device=dev, dtype=dtype), block, sparsity)
        out = kernels.block_sparse_linear(rand(m, k), w.requires_grad_(backward), block)
    else:
        raise SystemExit(f"unknown op {op!r} in {spec!r}: use matmul:MxKxN, linear:MxKxN, "
                         "attention:BxHxTxD[:causal|:full] or bsmm:MxKxN[:b64][:s0.9]")
    if backward:
        out.backward(torch.randn_like(out))
    torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kernels.autotune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=[],
                    help="matmul:MxKxN linear:MxKxN attention:BxHxTxD[:causal|:full] "
                         "bsmm:MxKxN[:b64][:s0.9]")
    ap.add_argument("--preset", action="append", default=[], choices=sorted(PRESETS))
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--forward-only", action="store_true", help="skip the backward kernels")
    ap.add_argument("--force", action="store_true", help="re-tune keys already cached")
    ap.add_argument("--show", action="store_true", help="print the cache of this GPU and exit")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("kernels.autotune: no CUDA GPU here; tuning times Triton kernels on a GPU "
              "(the CPU interpreter uses fixed plans)", file=sys.stderr)
        return 2
    _triton.require("kernels.autotune")
    path = cache_file(torch.cuda.get_device_name())
    if args.show:
        entries = Autotuner.load(path)
        print(f"{path}: {len(entries)} entries")
        for key, e in entries.items():
            print(f"  {key}: {plan_str(e['config'])}  {e['ms']:.4f} ms")
        return 0
    if args.force:
        os.environ[ENV_SWITCH] = "1"
        if path.exists():
            path.unlink()
    specs = [s for p in args.preset for s in PRESETS[p]] + list(args.shapes)
    if not specs:
        ap.error("give --shapes or --preset")
    before = len(TUNER.tuned)
    start = time.perf_counter()
    for spec in specs:
        t0 = time.perf_counter()
        run_shape(spec, DTYPES[args.dtype], backward=not args.forward_only)
        print(f"{spec}: done in {time.perf_counter() - t0:.1f} s")
    print(f"tuned {len(TUNER.tuned) - before} new keys in {time.perf_counter() - start:.1f} s; "
          f"cache: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
