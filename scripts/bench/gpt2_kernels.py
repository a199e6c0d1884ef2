"""GPT-2 124M trained through the kernels package vs the torch reference, in one process, one
GPU: the same seed, data order, model and trainer (lib/trainer.py), bf16 autocast,
torch.compile; only cfg.kernel_backend / cfg.kernel_linear differ.

  python -m scripts.bench.gpt2_kernels --out gpt2-kernels.json --md gpt2-kernels.md
  python -m scripts.bench.gpt2_kernels --smoke --out smoke.json   (CPU: torch vs the cpu backend)

Runs, in this order:
  torch        kernel_backend torch: F.linear and F.scaled_dot_product_attention (the reference)
  torch-noise  the same, with cuBLAS's bf16 reductions in full precision
               (allow_bf16_reduced_precision_reduction off): an implementation that differs
               from the reference only by bf16 rounding. Its distance from the reference is
               the measured "bf16 noise" of this training run.
  triton       kernel_backend triton, kernel_linear on: every nn.Linear (lm_head included)
               and the causal attention run our Triton kernels, forward and backward; under
               torch.compile each kernel call is one custom-op node (kernels/ops.py), so
               --compile-mode reduce-overhead captures them in CUDA graphs.

The loss curves agree when, after --skip steps, the largest |loss(triton) - loss(torch)| over
the logged steps is at most max(3 x the noise run's, --min-tol), and so is the final
validation loss difference. Tokens/s is timed over the steps after --warm of each run (compile,
autotuning and first launches fall in the warm-up; the tuner's JSON cache, KERNELS_CACHE_DIR,
is reused when present). One JSON (and optionally a Markdown table) out, with gpu and versions.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time


import torch

from scripts.bench.trainer import (H100_BF16_PEAK, bench_config, bench_trainer,
                                   environment, flops_per_token)


def curve_gap(a: list, b: list, skip: int) -> float:
    """Largest |loss difference| over the steps both curves logged, after `skip` steps."""
    la, lb = dict((s, v) for s, v in a), dict((s, v) for s, v in b)
    steps = sorted(s for s in la if s in lb and s > skip)
    if not steps:
        raise SystemExit(f"no common logged step after {skip}: run more --steps")
    return max(abs(la[s] - lb[s]) for s in steps)


def run_one(name: str, args, **overrides) -> tuple:
    cfg = bench_config(args.smoke, args.work, name, max_steps=args.steps,
                       checkpoint_interval=10 ** 6, eval_interval=10 ** 6,
                       compile_mode=args.compile_mode, **overrides)
    t0 = time.time()
    out = bench_trainer(cfg, args.warm)
    out["wall_s"] = time.time() - t0
    out["kernel_backend"], out["kernel_linear"] = cfg.kernel_backend, cfg.kernel_linear
    print(f"{name}: {out['tokens_per_s']:,.0f} tokens/s, val loss {out['val_loss']:.4f} "
          f"({out['wall_s']:.0f} s with compile)", flush=True)
    torch._dynamo.reset()          # the next run compiles its own graphs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out, cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--md", help="Markdown table to write")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    ap.add_argument("--warm", type=int, default=50, help="steps before the timed window")
    ap.add_argument("--skip", type=int, default=20,
                    help="steps before the curves are compared (the first steps' loss falls "
                         "too fast for a per-step comparison to mean much)")
    ap.add_argument("--min-tol", type=float, default=0.02,
                    help="floor of the loss tolerance, for a noise run that happens to agree "
                         "more closely than usual")
    ap.add_argument("--no-noise-run", action="store_true", help="skip the torch-noise run")
    ap.add_argument("--noise-from", metavar="JSON",
                    help="with --no-noise-run: take the noise from an earlier report of this "
                         "script with the same steps (its 'noise' field)")
    ap.add_argument("--work", default="/tmp/bench_gpt2_kernels", help="data and run folders")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode of every run, e.g. reduce-overhead (CUDA graphs)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, tiny model: torch vs the cpu backend (checks the script)")
    args = ap.parse_args(argv)
    if args.steps <= args.warm:
        ap.error(f"--steps {args.steps} must exceed --warm {args.warm}")
    earlier = None
    if args.noise_from:
        if not args.no_noise_run:
            ap.error("--noise-from goes with --no-noise-run")
        with open(args.noise_from) as f:
            earlier = json.load(f)
        if earlier.get("steps") != args.steps or "torch-noise" not in earlier.get("runs", {}):
            ap.error(f"{args.noise_from}: not a report with a noise run of {args.steps} steps")

    device = "cpu" if args.smoke else "cuda"
    ours = "cpu" if args.smoke else "triton"
    result = {**environment(device), "steps": args.steps, "warm": args.warm, "runs": {}}
    runs = result["runs"]
    runs["torch"], cfg = run_one("torch", args, kernel_backend="torch")
    if not args.no_noise_run and device == "cuda":
        flag = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        try:
            runs["torch-noise"], _ = run_one("torch-noise", args, kernel_backend="torch")
        finally:
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = flag
    runs[ours], _ = run_one(ours, args, kernel_backend=ours, kernel_linear=True)

    from gpt2.train import SPEC
    fpt = flops_per_token(cfg, SPEC.build_model(cfg))
    result["config"] = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size",
                        "vocab_size", "batch_size", "grad_accum", "precision", "compile", "compile_mode",
                        "seed")}
    result["flops_per_token"] = fpt
    for r in runs.values():
        r["mfu"] = r["tokens_per_s"] * fpt / H100_BF16_PEAK
    ref = runs["torch"]
    gap = {n: curve_gap(ref["losses"], r["losses"], args.skip) for n, r in runs.items() if n != "torch"}
    val = {n: abs(r["val_loss"] - ref["val_loss"]) for n, r in runs.items() if n != "torch"}
    noise = max(gap.get("torch-noise", 0.0), val.get("torch-noise", 0.0))
    if earlier is not None:
        noise = earlier["noise"]
        result["noise_from"] = args.noise_from
    tol = max(3 * noise, args.min_tol)
    result.update(curve_gap=gap, val_gap=val, noise=noise, tolerance=tol,
                  speed_ratio=runs[ours]["tokens_per_s"] / ref["tokens_per_s"],
                  curves_agree=gap[ours] <= tol and val[ours] <= tol)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    verdict = "agree" if result["curves_agree"] else "DIFFER"
    print(f"loss curves {verdict}: max |dloss| after step {args.skip} {gap[ours]:.4f}, val "
          f"{val[ours]:.4f}, tolerance {tol:.4f} (noise run {noise:.4f}); {ours} "
          f"{runs[ours]['tokens_per_s']:,.0f} vs torch {ref['tokens_per_s']:,.0f} tokens/s = "
          f"{result['speed_ratio']:.3f}x", flush=True)
    if args.md:
        with open(args.md, "w") as f:
            f.write(markdown(result, args))
    return 0 if result["curves_agree"] else 1


def markdown(r: dict, args) -> str:
    runs = r["runs"]
    ref = runs["torch"]
    c, k = ref["losses"], r["config"]
    L = [f"# GPT-2 {k['n_layer']}L/{k['n_embd']}: kernels package vs torch reference, "
         f"{r['gpu'] or 'cpu'}, {r['date']}", "",
         f"torch {r['torch']}, triton {r['triton']}, CUDA {r['cuda']}. `scripts/bench/gpt2_kernels.py` "
         f"in one process: {r['steps']} steps of {k['batch_size']} x {k['block_size']} byte tokens "
         f"(vocab {k['vocab_size']:,}), {k['precision']}, "
         f"{'torch.compile (' + k.get('compile_mode', 'default') + ')' if k['compile'] else 'eager'}, AdamW, seed {k['seed']} and the same "
         f"data order for every run; tokens/s over the steps after {r['warm']}; MFU against "
         "989.5 TFLOP/s.", "",
         "| run | kernel backend | Linear via kernels | tokens/s | MFU | vs torch | peak GPU memory | "
         "final train loss | val loss | max abs loss gap (steps > %d) |" % args.skip,
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in runs.items():
        g = "-" if name == "torch" else f"{r['curve_gap'][name]:.4f}"
        L.append(f"| {name} | {x['kernel_backend']} | {'yes' if x['kernel_linear'] else 'no'} | "
                 f"{x['tokens_per_s']:,.0f} | {100 * x['mfu']:.1f}% | "
                 f"{x['tokens_per_s'] / ref['tokens_per_s']:.3f}x | {x['peak_memory_mb']:,.0f} MiB | "
                 f"{x['losses'][-1][1]:.4f} | {x['val_loss']:.4f} | {g} |")
    source = f"the noise run of {r['noise_from']}" if r.get("noise_from") else "the noise run"
    L += ["", f"Loss curves {'agree' if r['curves_agree'] else 'DIFFER'}: tolerance "
          f"{r['tolerance']:.4f} = max(3 x the gap of {source} {r['noise']:.4f}, {args.min_tol}).",
          "",
          "| step | " + " | ".join(runs) + " |", "|---:|" + "---:|" * len(runs)]
    curves = {n: dict((s, v) for s, v in x["losses"]) for n, x in runs.items()}
    for s, _ in c:
        L.append(f"| {s} | " + " | ".join(f"{curves[n].get(s, float('nan')):.4f}" for n in runs) + " |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
