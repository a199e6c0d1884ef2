"""Does pruning pay? GPT-2 124M trained and run block-pruned against the dense torch model,
end to end, in one process on one GPU (issue #23's targets).

  python -m scripts.bench.pruned --out $OUT                  (one GPU; ~10 min on an H200)
  python -m scripts.bench.pruned --out $OUT --parts train    (train | overhead | infer)
  python -m scripts.bench.pruned --out B --parts overhead --into A/pruned.json
                                            (a part run later, added to an earlier report)
  python -m scripts.bench.pruned --smoke --out /tmp/p        (CPU, tiny model: checks it)

train     lib.trainer.run() on gpt2's ModelSpec, B16 x T1024 bf16 per optimizer step, AdamW,
          compiled as the trainer compiles it (--compile-mode, reduce-overhead by default:
          the triton backend's default on one GPU): the dense torch run, and for each
          --sparsity a run with kernel_linear on the triton backend and magnitude pruning of
          64x64 blocks in the transformer blocks (head and embeddings dense), each layer to
          the target (--scope), ramped over the first --ramp of the steps. tokens/s is the
          median of the trainer's logged rates after the ramp (the window that holds the
          re-compile at the final mask left out), the same window for every run; eval loss
          from the trainer's final evaluation.
overhead  the same trainer with the torch backend and unstructured pruning to 90 percent
          by magnitude, movement (AdamW) and state (AdamWPrune), against the same optimizer
          unpruned: prune_overhead = 1 - pruned / unpruned tokens/s after the ramp (two
          runs: about +-3 percent of noise on the H200), and pruner_share = the GPU time of
          the pruner's calls per step (CUDA events) / the step's time, a direct measure.
infer     each trained run loaded as `make infer` loads it (lib/runload: weights, masks,
          layouts), forward of B16 x T1024 under no_grad, eager, compiled and under CUDA
          graphs (--infer-modes), against the dense torch model's forward.

Out: <out>/pruned.json (train_speedup, infer_speedup, prune_overhead, eval losses, every
run's figures, date, device, versions, commit), <out>/loss_vs_speed.png, and rows appended
to the results table (--table; none with --smoke).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from gpt2.train import SPEC
from lib import fsio, infer, pruning, runload, trainer
from scripts.bench import machine, table
from scripts.bench.trainer import bench_config

BLOCK = 64


def runs_wanted(parts, sparsities, smoke, scope="layer"):
    """name -> Config overrides of each trainer run the parts need."""
    backend = "cpu" if smoke else "triton"
    block = 16 if smoke else BLOCK
    out = {"dense": {}}
    if "train" in parts or "infer" in parts:
        for s in sparsities:
            out[f"block{int(s * 100)}"] = dict(
                kernel_linear=True, kernel_backend=backend, pruning_method="magnitude",
                target_sparsity=s, pruning_block_size=block, pruning_scope=scope)
    if "overhead" in parts:
        for method in ("magnitude", "movement"):
            out[method] = dict(pruning_method=method, target_sparsity=0.9)
        out["adamwprune"] = dict(optimizer="adamwprune")
        out["state"] = dict(optimizer="adamwprune", pruning_method="state", target_sparsity=0.9)
    return out


class PrunerClock:
    """GPU ms of the pruner's own work per step (Pruner.before_step + after_step: masking
    gradients and weights, scores, mask updates), from CUDA events around the two calls, on
    the stream that runs them; a direct measure where comparing two runs' rates is noisier
    than the 1 percent it looks for."""

    def __init__(self, on: bool):
        self.on, self.pairs, self.real = on, [], {}

    def __enter__(self):
        if self.on:
            for fn in ("before_step", "after_step"):
                real = self.real[fn] = getattr(pruning.Pruner, fn)
                setattr(pruning.Pruner, fn, self.timed(real))
        return self

    def timed(self, real):
        def wrapper(pruner, step, *a, **k):
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            out = real(pruner, step, *a, **k)
            t1.record()
            self.pairs.append((step, t0, t1))
            return out
        return wrapper

    def __exit__(self, *exc):
        for fn, real in self.real.items():
            setattr(pruning.Pruner, fn, real)

    def ms_per_step(self, after: float) -> float:
        torch.cuda.synchronize()
        per = {}
        for step, t0, t1 in self.pairs:
            if step > after:
                per[step] = per.get(step, 0.0) + t0.elapsed_time(t1)
        return statistics.median(per.values()) if per else 0.0


def train_run(work, name, overrides, args):
    steps = args.steps
    cfg = bench_config(args.smoke, work, name, batch_size=16 if not args.smoke else 8,
                       grad_accum=1, max_steps=steps, log_interval=args.log_interval,
                       eval_interval=0, checkpoint_interval=10 * steps, monitor_interval=0,
                       compile_mode=args.compile_mode, pruning_warmup=0.0,
                       pruning_ramp_end=args.ramp, pruning_frequency=max(1, steps // 20),
                       **overrides)
    torch._dynamo.reset()            # a fresh compile per run (env-facts: models in a row)
    t0 = time.time()
    with PrunerClock(cfg.device == "cuda" and cfg.pruning_method != "none") as clock:
        rc = trainer.run(SPEC, trainer.resolve_paths(cfg))
    if rc != 0:
        raise SystemExit(f"{name}: trainer run failed (exit {rc}); see {cfg.out_dir}/train.log")
    rows = [r for r in fsio.read_jsonl(os.path.join(cfg.out_dir, "metrics.jsonl"))
            if r["kind"] == "train"]
    start = args.ramp * steps + 2 * args.log_interval      # after the final mask's re-compile
    after = [r["throughput"] for r in rows if r["step"] > start]
    s = fsio.read_json(os.path.join(cfg.out_dir, "summary.json"))
    rate = statistics.median(after)
    prune_ms = clock.ms_per_step(start) if clock.on else None
    step_ms = cfg.batch_size * cfg.block_size / rate * 1e3
    return {"run_dir": cfg.out_dir, "tokens_per_s": rate, "step_ms": step_ms,
            "pruner_ms_per_step": prune_ms,
            "pruner_share": prune_ms / step_ms if prune_ms is not None else None,
            "windows": len(after), "eval_loss": s["eval_loss"], "sparsity": s["sparsity"],
            "block_sparse": s.get("block_sparse"), "peak_memory_mb": s["peak_memory_mb"],
            "wall_s": round(time.time() - t0, 1), "overrides": overrides}


INFER_MODES = {"eager": None, "compiled": "default", "graphed": "reduce-overhead"}


def infer_rates(run_dir, args, mode):
    """tokens/s of the forward of a finished run as `make infer` loads it, eager or compiled
    (INFER_MODES: torch.compile's mode; reduce-overhead replays CUDA graphs, so the host's
    per-call cost of the custom ops is gone)."""
    loaded = runload.load_run(run_dir, device="cpu" if args.smoke else "cuda")
    model, cfg = loaded.model, loaded.cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (16 if not args.smoke else 4, cfg.block_size),
                      generator=g).to(loaded.device)
    torch._dynamo.reset()
    if INFER_MODES[mode]:
        model = torch.compile(model, mode=INFER_MODES[mode])
    with torch.no_grad():
        return infer.forward_rate(model, x, x.numel(), cfg, loaded.device, args.seconds)


def merged(earlier: dict, report: dict) -> dict:
    """earlier's figures with this report's added (this one's win where both have a key);
    meta keeps every part's."""
    out = dict(earlier)
    for k, v in report.items():
        if k == "meta":
            out["meta"] = {**earlier.get("meta", {}), **v,
                           "parts": earlier.get("meta", {}).get("parts", []) + [v]}
        elif isinstance(v, dict) and isinstance(earlier.get(k), dict):
            out[k] = {**earlier[k], **{n: ({**earlier[k][n], **x} if isinstance(x, dict) and
                                           isinstance(earlier[k].get(n), dict) else x)
                                       for n, x in v.items()}}
        else:
            out[k] = v
    return out


def plot(results, path, steps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        if name == "dense" or name.startswith("block"):
            ax.scatter(r["tokens_per_s"] / 1e3, r["eval_loss"], s=40)
            ax.annotate(name, (r["tokens_per_s"] / 1e3, r["eval_loss"]),
                        textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("training tokens/s after the ramp (thousands)")
    ax.set_ylabel("eval loss")
    ax.set_title(f"GPT-2 124M, {steps} steps: dense vs 64x64 block-pruned (one run each)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="the runs' folders (default <out>/work)")
    ap.add_argument("--parts", nargs="+", default=["train", "overhead", "infer"],
                    choices=["train", "overhead", "infer"])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ramp", type=float, default=0.3, help="pruning_ramp_end")
    ap.add_argument("--scope", default="layer", choices=["layer", "global"],
                    help="pruning_scope of the block runs: layer (each layer to the target, "
                         "the default here) or global (one threshold: GPT-2's small-init "
                         "output projections are then pruned whole)")
    ap.add_argument("--log-interval", type=int, default=10)
    ap.add_argument("--compile-mode", default="reduce-overhead")
    ap.add_argument("--seconds", type=float, default=2.0, help="per forward-rate measurement")
    ap.add_argument("--infer-modes", nargs="+", default=list(INFER_MODES), choices=INFER_MODES)
    ap.add_argument("--into", help="an earlier pruned.json this run's figures are added to "
                    "(the parts of one report measured in separate processes)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--table", default=table.TABLE)
    ap.add_argument("--commit", help="the commit measured (default: this tree's HEAD; a "
                    "copy of the tree without its .git, as on a lent GPU machine, needs it)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.log_interval, args.compile_mode = min(args.steps, 40), 2, "default"
        args.seconds = min(args.seconds, 0.2)
    os.makedirs(args.out, exist_ok=True)
    work = args.work or os.path.join(args.out, "work")
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), **machine.versions(),
            "gpu": machine.device_name(not args.smoke), "commit": args.commit or table.commit_of(),
            "batch": "16x1024", "precision": "fp32" if args.smoke else "bf16",
            "compile_mode": args.compile_mode, "steps": args.steps, "ramp": args.ramp,
            "block": 16 if args.smoke else BLOCK, "scope": args.scope, "smoke": args.smoke,
            "parts_run": args.parts, "sparsity": args.sparsity}
    results = {}
    for name, overrides in runs_wanted(args.parts, args.sparsity, args.smoke,
                                       args.scope).items():
        print(f"=== {name} {overrides}", flush=True)
        results[name] = train_run(work, name, overrides, args)
        print(f"=== {name}: {results[name]['tokens_per_s']:,.0f} tokens/s, eval loss "
              f"{results[name]['eval_loss']:.4f}", flush=True)
    dense = results["dense"]
    report = {"meta": meta, "runs": results,
              "losses": {n: r["eval_loss"] for n, r in results.items()}}
    blocks = {n: r for n, r in results.items() if n.startswith("block")}
    if "train" in args.parts:
        report["train_speedup"] = {n: r["tokens_per_s"] / dense["tokens_per_s"]
                                   for n, r in blocks.items()}
    if "overhead" in args.parts:
        report["prune_overhead"] = {
            m: 1 - results[m]["tokens_per_s"] / results[base]["tokens_per_s"]
            for m, base in (("magnitude", "dense"), ("movement", "dense"),
                            ("state", "adamwprune"))}
        report["pruner_share"] = {m: results[m]["pruner_share"]
                                  for m in ("magnitude", "movement", "state")}
    if "infer" in args.parts:
        report["infer_speedup"], report["infer_tokens_per_s"] = {}, {}
        for mode in args.infer_modes:
            rates = {n: infer_rates(r["run_dir"], args, mode)
                     for n, r in {"dense": dense, **blocks}.items()}
            report["infer_tokens_per_s"][mode] = rates
            report["infer_speedup"][mode] = {n: v / rates["dense"] for n, v in rates.items()
                                             if n != "dense"}
    if args.into:
        report = merged(fsio.read_json(args.into), report)
    fsio.atomic_write_json(os.path.join(args.out, "pruned.json"), report)
    if blocks:
        plot(results, os.path.join(args.out, "loss_vs_speed.png"), args.steps)
    print(json.dumps({k: v for k, v in report.items() if k not in ("runs", "meta")}, indent=1))
    if not args.smoke:
        def row(case, layout, pas, ratio):
            return {"op": "gpt2_pruned", "case": case, "layout": layout, "shape": "16x1024",
                    "dtype": "bfloat16", "pass": pas, "ratio": round(ratio, 4)}
        rows = [row(f"train {n} ({BLOCK}x{BLOCK} blocks)", "trainer vs dense torch trainer",
                    "train", v) for n, v in report.get("train_speedup", {}).items()]
        rows += [row(f"infer {n} {mode}", "vs dense torch", "fwd", v)
                 for mode, d in report.get("infer_speedup", {}).items() for n, v in d.items()]
        rows += [row(f"prune overhead {m}", "1 - pruned/unpruned tokens/s", "train", v)
                 for m, v in report.get("prune_overhead", {}).items()]
        rows += [row(f"pruner share {m}", "pruner GPU ms / step ms (CUDA events)", "train", v)
                 for m, v in report.get("pruner_share", {}).items() if v is not None]
        table.append(rows, meta, "pruned.json", path=args.table, commit=meta["commit"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
