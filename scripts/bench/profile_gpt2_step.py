"""Where a GPT-2 training step's time goes: torch.profiler over a few optimizer steps of the
model the trainer builds (same config as scripts/bench/trainer.py), for one kernel backend.

  python -m scripts.bench.profile_gpt2_step --backend triton --linear      (one GPU)
  python -m scripts.bench.profile_gpt2_step --smoke --backend cpu --linear (CPU, tiny: checks it)

Prints the wall time per optimizer step, the GPU busy time per step (sum of kernel times),
the graph breaks torch.compile made, and the ops with the most GPU (or CPU) time.
"""
from __future__ import annotations

import argparse
import sys
import time


import torch
from torch.profiler import ProfilerActivity, profile

from gpt2.train import SPEC
from lib import trainer
from scripts.bench.trainer import bench_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch", choices=("torch", "triton", "cpu"))
    ap.add_argument("--linear", action="store_true", help="route nn.Linear through kernels")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-mode", default="default", help="e.g. reduce-overhead (CUDA graphs)")
    ap.add_argument("--warm", type=int, default=8, help="optimizer steps before profiling")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps profiled")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--work", default="/tmp/profile_gpt2")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model")
    args = ap.parse_args(argv)

    cfg = bench_config(args.smoke, args.work, "profile", kernel_backend=args.backend,
                       kernel_linear=args.linear, compile=not (args.smoke or args.no_compile),
                       compile_mode=args.compile_mode)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model, optimizer, _ = trainer.build_training(SPEC, cfg, args.warm + args.steps, device)
    step_model = torch.compile(model, **trainer.compile_options(cfg)) if cfg.compile else model
    train_ds, _ = SPEC.build_datasets(cfg)
    micro = cfg.batch_size // cfg.grad_accum
    batches = []
    for m in range(cfg.grad_accum):
        xs, ys = zip(*(train_ds[m * micro + i] for i in range(micro)))
        batches.append((torch.stack(xs).to(device), torch.stack(ys).to(device)))

    graphs = trainer.uses_cudagraphs(cfg)   # as the trainer's Run does under CUDA graphs
    if graphs:
        trainer.make_grads(model)

    def step():
        for x, y in batches:
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with trainer.amp_context(cfg):
                loss = step_model(x, y) / cfg.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=not graphs)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warm):
        step()
    sync()
    t = time.time()
    for _ in range(args.steps):
        step()
    sync()
    wall = (time.time() - t) / args.steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(args.steps):
            step()
        sync()
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    gpu_us = sum(getattr(e, "self_device_time_total", 0) for e in events
                 if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    from torch._dynamo.utils import counters
    breaks = sum(counters["graph_break"].values())
    tokens = cfg.batch_size * cfg.block_size
    print(f"backend {args.backend}, linear via kernels {args.linear}, compile {cfg.compile} "
          f"({cfg.compile_mode}): "
          f"{wall * 1e3:.1f} ms per optimizer step ({tokens / wall:,.0f} tokens/s unprofiled); "
          f"GPU kernels busy {gpu_us / 1e3 / args.steps:.1f} ms per step "
          f"({100 * gpu_us / 1e6 / args.steps / wall:.0f}% of the wall); graph breaks {breaks}")
    print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
