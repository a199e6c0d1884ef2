"""Where the host time of a kernels call goes: cProfile over many calls at tiny shapes (the GPU
work is a few microseconds, so the wall time per call is the host's), ours vs torch's, and
Triton's own launcher timed alone on the same kernel and arguments.

  python -m scripts.bench.profile_kernel_host            (a CUDA GPU)
  TRITON_INTERPRET=1 python -m scripts.bench.profile_kernel_host --n 3   (CPU: checks the script)
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys

import torch
import torch.nn.functional as F

import kernels
from scripts.bench.timing import per_call_us


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="calls per measurement")
    ap.add_argument("--rows", type=int, default=22)
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dt = torch.bfloat16 if cuda else torch.float32
    kernels.set_backend("triton")
    x, w = (torch.randn(64, 64, device=dev, dtype=dt, requires_grad=True) for _ in range(2))
    q, k, v = (torch.randn(1, 1, 64, 64, device=dev, dtype=dt, requires_grad=True)
               for _ in range(3))
    xd, wd = x.detach(), w.detach()
    cases = {
        "linear fwd": (lambda: kernels.linear(xd, wd), lambda: F.linear(xd, wd)),
        "linear fwd+bwd": (lambda: kernels.linear(x, w).sum().backward(),
                           lambda: F.linear(x, w).sum().backward()),
        "attention fwd+bwd": (lambda: kernels.attention(q, k, v).sum().backward(),
                              lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
                              .sum().backward()),
    }
    for name, (ours, theirs) in cases.items():
        print(f"{name}: ours {per_call_us(ours, args.n, sync):.1f} us, torch "
              f"{per_call_us(theirs, args.n, sync):.1f} us per call", flush=True)

    # Triton's launcher alone: the cached launch entry of the forward product, called directly
    launcher = sys.modules["kernels.matmul.launcher"]
    entry = next(iter(launcher._LAUNCHES.items()), None)
    if entry is not None:
        key, (fn, const) = entry
        a, b = xd, wd.t().contiguous()
        c = torch.empty(64, 64, device=dev, dtype=dt)

        def raw():
            fn(a, b, c, c, c, 64, 64, 64, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
               c.stride(0), c.stride(1), **const)
        print(f"triton launcher alone (matmul kernel): {per_call_us(raw, args.n, sync):.1f} us "
              "per call", flush=True)
        print(f"torch.empty(64, 64): "
              f"{per_call_us(lambda: torch.empty(64, 64, device=dev, dtype=dt), args.n, sync):.1f} us")

    for name, (ours, _) in cases.items():
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.n):
            ours()
        sync()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.rows)
        print(f"\n=== cProfile, {args.n} calls of {name} (tottime = own time)\n" +
              "\n".join(s.getvalue().splitlines()[4:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
