"""Dry-run of planned runs, in one process per model: for each run build model, optimizer
and pruner, run two training steps on a tiny synthetic batch on the CPU, and estimate the
peak memory of one GPU at the configured batch.

The estimate: weights + grads + optimizer state + pruner buffers, measured after the two
steps, plus activations (outputs of leaf modules, measured by forward hooks on the tiny
batch and scaled to the configured micro-batch; halved under bf16/fp16), plus 20 percent
for the allocator and workspaces. It is a planning figure to catch a preset that cannot
fit, not a measurement: the GPU runs record the real peak.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch

from lib.build import build_training

TINY = 2


def _bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_bytes(v) for v in obj)
    return 0


def check(spec, cfg) -> dict:
    row = {"run_id": cfg.run_id(), "model": cfg.model, "status": "FAIL", "reason": "",
           "params": 0, "est_peak_mb": 0.0, "gpu_mb": cfg.gpu_memory_gb * 1024}
    t0 = time.time()
    try:
        cpu = dataclasses.replace(cfg, device="cpu", precision="fp32", compile=False,
                                  batch_size=TINY, grad_accum=1, gpus=1)
        model, optimizer, pruner = build_training(spec, cpu, total_steps=2, device="cpu")
        row["params"] = sum(p.numel() for p in model.parameters())
        act = [0]
        leaves = [m for m in model.modules() if not list(m.children())]
        hooks = [m.register_forward_hook(lambda m, i, o: act.__setitem__(0, act[0] + _bytes(o)))
                 for m in leaves]
        for step in (1, 2):
            act[0] = 0
            batch = spec.example_batch(cpu, TINY)
            loss = spec.task.loss(model, batch)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss is {loss.item()} at dry-run step {step}")
            loss.backward()
            pruner.before_step(step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            pruner.after_step(step)
        pruner.finalize()
        for h in hooks:
            h.remove()
        micro = cfg.batch_size / (cfg.gpus * cfg.grad_accum)
        half = 0.5 if cfg.precision in ("bf16", "fp16") else 1.0
        weights = sum(_bytes(p) for p in model.parameters())
        state = weights * 2 + _bytes(optimizer.state_dict()["state"]) + _bytes(pruner.state_dict())
        scale = spec.example_scale(cfg) if getattr(spec, "example_scale", None) else 1.0
        est = (state + act[0] * micro / TINY * scale * half) * 1.2
        row["est_peak_mb"] = est / 2**20
        if cfg.gpu_memory_gb and cfg.device == "cuda" and est > cfg.gpu_memory_gb * 2**30:
            row["reason"] = (f"needs ~{est/2**30:.1f} GiB per GPU, preset has "
                             f"{cfg.gpu_memory_gb} GiB: lower batch_size or raise grad_accum")
        else:
            row["status"] = "OK"
    except Exception as e:
        row["reason"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    row["seconds"] = round(time.time() - t0, 2)
    return row


def main(spec, payload) -> int:
    report, cfgs = payload
    # tiny batches: one thread. Two OpenMP threads spinning against other processes on the
    # shared 2-core host made dry-runs 1.7-2x slower (resnet18-comprehensive-pruning-compare
    # 78 s vs 37 s, gpt2-h100 88 s vs 50 s, 2026-11-23)
    torch.set_num_threads(1)
    rows = [check(spec, cfg) for cfg in cfgs]
    if report:
        with open(report, "w") as f:
            json.dump(rows, f)
    else:
        for r in rows:
            print(f"{r['run_id']:<55} {r['params']:>12,} {r['est_peak_mb']:>10.0f} MB  "
                  f"{r['status']} {r['reason']}")
    return 0 if all(r["status"] == "OK" for r in rows) else 1
