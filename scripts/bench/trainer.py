"""What the shared trainer costs: GPT-2 124M through lib/trainer.py vs a bare PyTorch training
step, in one process on one GPU, bf16 autocast, torch.compile.

  python -m scripts.bench.trainer --out bench.json          (one GPU; ~100 s on an H100)
  python -m scripts.bench.trainer --out bench.json --steps 560 --warm 60 \
      --checkpoint-interval 500                            (the GPU preset's checkpoint cadence)
  python -m scripts.bench.trainer --smoke --out smoke.json  (CPU, tiny model: checks the script)

trainer       lib.trainer.run() on gpt2's ModelSpec with the GPU preset's batch (64 sequences
              of 1024 tokens = 4 micro-steps of 16), GPT-2 124M's shape (vocab 50,304 over
              byte tokens of the stdlib corpus), AdamW from lib/optim.py, grad clip 1.0,
              warm-up + cosine LR, data through lib/data.py's sampler (num_workers 0),
              metrics every 10 steps, the GPU monitor every 2 s, a checkpoint every 50 steps
              (--checkpoint-interval), no evaluation inside the timed window (--eval-interval;
              the bare step has none either), pruning off.
bare_fused    the same model class, init and compile, F.scaled_dot_product_attention (the
              kernels "torch" backend is SDPA), torch.optim.AdamW(fused=True), the same
              micro-batches already on the GPU, no logging, no checkpoints.
bare_foreach  bare with AdamW's default foreach implementation (what lib/optim.py builds),
              to tell the optimizer's share from the trainer's.

Each is timed by wall clock over optimizer steps after its warm-up (compile included in the
warm-up). MFU = tokens/s x flops per token / peak, flops per token = 6 N + 12 L H Q T
(nanoGPT's estimate; N without the position embedding), peak 989.5 TFLOP/s (H100 SXM,
dense bf16). One JSON object out, with gpu, date and versions.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time


import torch

from gpt2 import prepare
from gpt2.config import Config
from gpt2.train import SPEC
from lib import checkpoint, data, fsio, optim, trainer
from scripts.bench import machine

H100_BF16_PEAK = 989.5e12


def flops_per_token(cfg, model) -> float:
    n = model.num_params(non_embedding=True)
    return 6 * n + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size


def environment(device: str) -> dict:
    """Date, versions and the GPU's name (None on the CPU) at the top of a report."""
    return {"date": time.strftime("%Y-%m-%d"), **machine.versions(),
            "gpu": machine.device_name(True) if device == "cuda" else None}


def bench_config(smoke: bool, work: str, run_name: str, **overrides) -> Config:
    """GPT-2 124M's shape (vocab 50,304 over byte tokens of the stdlib corpus), bf16, compiled,
    64 sequences of 1024 tokens per optimizer step in 4 micro-steps, on CUDA; with smoke a
    2-layer 64-wide model on the CPU. The corpus is prepared under work/data, the run goes to
    work/<run_name> (emptied first)."""
    size = (dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=320) if smoke
            else dict(vocab_size=50304))
    settings = dict(size, tokenizer="byte", device="cpu" if smoke else "cuda",
                    precision="fp32" if smoke else "bf16", compile=not smoke,
                    batch_size=8 if smoke else 64, grad_accum=2 if smoke else 4,
                    warmup_steps=10, log_interval=10, eval_batches=2 if smoke else 20,
                    monitor_interval=2.0, data_dir=os.path.join(work, "data"),
                    out_dir=os.path.join(work, run_name))
    settings.update(overrides)
    cfg = Config(**settings)
    cfg.validate()
    if os.path.exists(cfg.out_dir):
        import shutil
        shutil.rmtree(cfg.out_dir)
    prepare.prepare("stdlib", cfg.data_dir, "byte")
    return cfg


# -----------------------------------------------------------------------------
# the full trainer

def bench_trainer(cfg, warm: int) -> dict:
    """Run the trainer; time each checkpoint twice: the training loop's wait in
    Run.save_checkpoint (the cost on the critical path) and checkpoint.save (the write,
    which may run in a background thread)."""
    waits, writes = [], []

    def timed(fn, into):
        def wrapper(*a, **k):
            t = time.time()
            out = fn(*a, **k)
            into.append(time.time() - t)
            return out
        return wrapper
    real_wait, real_write = trainer.Run.save_checkpoint, checkpoint.save
    trainer.Run.save_checkpoint = timed(real_wait, waits)
    checkpoint.save = timed(real_write, writes)
    try:
        rc = trainer.run(SPEC, trainer.resolve_paths(cfg))
    finally:
        trainer.Run.save_checkpoint, checkpoint.save = real_wait, real_write
    if rc != 0:
        raise SystemExit(f"trainer run failed (exit {rc}); see {cfg.out_dir}/train.log")
    rows = fsio.read_jsonl(os.path.join(cfg.out_dir, "metrics.jsonl"))
    train = [r for r in rows if r["kind"] == "train"]
    a = next(r for r in train if r["step"] >= warm)
    b = train[-1]
    tokens = (b["step"] - a["step"]) * cfg.batch_size * cfg.block_size
    seconds = b["time"] - a["time"]
    summary = fsio.read_json(os.path.join(cfg.out_dir, "summary.json"))
    # save i (from 0) follows step (i + 1) x interval, after that step's metrics row
    in_window = [s for i, s in enumerate(waits) if (i + 1) * cfg.checkpoint_interval >= a["step"]]
    return {"tokens_per_s": tokens / seconds, "window_steps": [a["step"], b["step"]],
            "window_s": seconds, "checkpoint_s_in_window": in_window,
            "checkpoint_s_each": waits, "checkpoint_write_s_each": writes,
            "peak_memory_mb": summary["peak_memory_mb"],
            "losses": [[r["step"], r["loss"]] for r in train],
            "val_loss": summary["eval_loss"], "val_perplexity": summary["eval_perplexity"],
            "params": summary["params"]}


def dataloader_ms_per_step(cfg, steps: int = 20) -> float:
    """CPU time the trainer's data path takes per optimizer step (sampler, per-sample seeded
    windows, collate), alone; in training it overlaps the GPU's asynchronous work."""
    train_ds, _ = SPEC.build_datasets(cfg)
    loader = data.train_loader(data.SeededDataset(train_ds, cfg.seed), cfg, 0, 0, 0, 1)
    it = iter(loader)
    next(it)
    t = time.time()
    for _ in range(steps * cfg.grad_accum):
        next(it)
    return (time.time() - t) / steps * 1e3


# -----------------------------------------------------------------------------
# the bare step

def bench_bare(cfg, device, micro_batches, warm: int, steps: int, fused: bool, model=None):
    if model is None:
        torch.manual_seed(cfg.seed)
        model = SPEC.build_model(cfg).to(device)
        if cfg.compile:
            model = torch.compile(model, **trainer.compile_options(cfg))
    groups = optim.param_groups(model, cfg.weight_decay)
    kw = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **kw)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                         enabled=cfg.precision == "bf16")
    accum = cfg.grad_accum

    def step(i):
        for g in opt.param_groups:
            g["lr"] = trainer.lr_at(cfg, i, warm + steps)
        for j in range(accum):
            x, y = micro_batches[(i * accum + j) % len(micro_batches)]
            with amp:
                loss = model(x, y) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warm):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    for i in range(warm, warm + steps):
        loss = step(i)
    last = loss.item() * accum
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    out = {"tokens_per_s": steps * cfg.batch_size * cfg.block_size / seconds, "window_s": seconds,
           "steps": steps, "last_loss": last, "peak_memory_mb": peak}
    del opt
    return out, model


# -----------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--steps", type=int, default=150, help="trainer optimizer steps")
    ap.add_argument("--warm", type=int, default=50, help="trainer steps before the timed window")
    ap.add_argument("--checkpoint-interval", type=int, default=50,
                    help="trainer checkpoint cadence (the GPT-2 GPU presets use 500)")
    ap.add_argument("--eval-interval", type=int, default=100000,
                    help="evaluation cadence; the default (> --steps) never evaluates inside "
                         "the timed window, as the bare step does not; 0 = at each epoch's end")
    ap.add_argument("--bare-steps", type=int, default=60)
    ap.add_argument("--bare-warm", type=int, default=10)
    ap.add_argument("--work", default="/tmp/bench_trainer", help="data and run folders")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode of both, e.g. reduce-overhead (CUDA graphs)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model, a few steps")
    args = ap.parse_args(argv)

    device = torch.device("cpu" if args.smoke else "cuda")
    cfg = bench_config(args.smoke, args.work, "run", max_steps=args.steps,
                       checkpoint_interval=5 if args.smoke else args.checkpoint_interval,
                       eval_interval=args.eval_interval, compile_mode=args.compile_mode)
    result = {**environment(device.type), "config": {
        k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size",
                                      "batch_size", "grad_accum", "precision", "compile", "compile_mode",
                                      "optimizer", "checkpoint_interval", "log_interval",
                                      "monitor_interval", "num_workers")}}
    tokens_per_step = cfg.batch_size * cfg.block_size
    print(f"GPT-2 {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, {tokens_per_step:,} tokens per step "
          f"({cfg.grad_accum} micro-steps of {cfg.batch_size // cfg.grad_accum}), {device}", flush=True)

    t0 = time.time()
    result["trainer"] = bench_trainer(cfg, args.warm)
    print(f"trainer: {result['trainer']['tokens_per_s']:,.0f} tokens/s ({time.time() - t0:.0f}s "
          f"with compile)", flush=True)
    torch._dynamo.reset()      # a second compile in one process needs it (env-facts.md)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    train_ds, _ = SPEC.build_datasets(cfg)
    micro = cfg.batch_size // cfg.grad_accum
    micro_batches = []
    for m in range(8):
        xs, ys = zip(*(train_ds[m * micro + i] for i in range(micro)))
        micro_batches.append((torch.stack(xs).to(device), torch.stack(ys).to(device)))
    t0 = time.time()
    result["bare_fused"], model = bench_bare(cfg, device, micro_batches, args.bare_warm,
                                             args.bare_steps, fused=device.type == "cuda")
    print(f"bare (fused AdamW): {result['bare_fused']['tokens_per_s']:,.0f} tokens/s "
          f"({time.time() - t0:.0f}s with compile)", flush=True)
    result["bare_foreach"], _ = bench_bare(cfg, device, micro_batches, 5, args.bare_steps,
                                           fused=False, model=model)
    print(f"bare (foreach AdamW): {result['bare_foreach']['tokens_per_s']:,.0f} tokens/s", flush=True)
    result["dataloader_ms_per_step"] = dataloader_ms_per_step(cfg)

    raw = getattr(model, "_orig_mod", model)
    fpt = flops_per_token(cfg, raw)
    result["flops_per_token"] = fpt
    for k in ("trainer", "bare_fused", "bare_foreach"):
        result[k]["mfu"] = result[k]["tokens_per_s"] * fpt / H100_BF16_PEAK
    tr, bf, bfe = (result[k]["tokens_per_s"] for k in ("trainer", "bare_fused", "bare_foreach"))
    result["ratio_trainer_vs_bare_fused"] = tr / bf
    result["ratio_trainer_vs_bare_foreach"] = tr / bfe
    result["ratio_bare_foreach_vs_fused"] = bfe / bf
    t = result["trainer"]
    step_s = t["window_s"] / (t["window_steps"][1] - t["window_steps"][0])
    result["checkpoint_share"] = sum(t["checkpoint_s_in_window"]) / t["window_s"]
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"trainer {tr:,.0f} / bare fused {bf:,.0f} = {tr / bf:.3f}x (target >= 0.95x); "
          f"bare foreach / fused = {bfe / bf:.3f}; trainer / bare foreach = {tr / bfe:.3f}x; "
          f"checkpoints {100 * result['checkpoint_share']:.1f}% of the window "
          f"({len(t['checkpoint_s_in_window'])} saves, {step_s * 1e3:.0f} ms per step); data "
          f"{result['dataloader_ms_per_step']:.1f} ms CPU per step; MFU trainer "
          f"{100 * t['mfu']:.1f}%, bare {100 * result['bare_fused']['mfu']:.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
