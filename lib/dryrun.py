"""Dry-run of planned runs, in one process per model: for each run build model, optimizer
and pruner, run two training steps on a tiny synthetic batch on the CPU, and estimate the
peak memory of one GPU at the configured batch.

The estimate: weights + grads + optimizer state + pruner buffers, measured after the two
steps, plus activations (outputs of leaf modules, measured by forward hooks on the tiny
batch and scaled to the configured micro-batch; halved under bf16/fp16), plus 20 percent
for the allocator and workspaces. It is a planning figure to catch a preset that cannot
fit, not a measurement: the GPU runs record the real peak.

Each row also carries what the real run needs and whether this machine has it (warnings,
not failures: a GPU preset is checked on a CPU machine too): the data set on disk or
downloadable (data_download), and the GPUs the preset asks for visible. And the planned
step count with the measured time of the second CPU step, which the runner turns into a
wall-time estimate (scripts/engine/matrix.py; earlier finished runs give a better one).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import sys
import time

import torch

from lib.build import build_training
from lib.paths import REPO

TINY = 2

# training-set sizes of the data sets whose size is fixed (docs/data.md); the folder each is
# looked for under DATA_DIR, and whether torchvision can download it (data_download)
DATASETS = {
    "digits": (1437, None, False),                       # inside scikit-learn: always there
    "mnist": (60000, "MNIST", True),
    "cifar10": (50000, "cifar-10-batches-py", True),
    "cifar100": (50000, "cifar-100-python", True),
    "imagenet": (1281167, "imagenet", False),
}


def data_check(cfg) -> tuple:
    """(training samples or None, warning or ""): is the run's data set on disk, or will the
    run fetch it? Looks for the folders only, never loads or prepares anything."""
    root = cfg.data_dir if cfg.data_dir not in ("", "data") else os.path.join(REPO, "data")
    ds = cfg.dataset
    if cfg.model == "gpt2":
        block = getattr(cfg, "block_size", 1024)
        metas = sorted(glob.glob(os.path.join(root, "gpt2", f"{ds}-*", "meta.json")))
        if metas:
            try:
                with open(metas[0]) as f:
                    return json.load(f)["train_tokens"] // (block + 1), ""
            except (OSError, ValueError, KeyError):
                pass
        if ds == "stdlib":
            return None, ""                              # prepared by the run itself
        return None, (f"data: no prepared {ds!r} corpus under {os.path.join(root, 'gpt2')}/ "
                      f"(CONFIG_GPT2_DATASET, CONFIG_DATA_DIR); python gpt2/prepare.py "
                      f"--dataset {ds} --input <text files>")
    if ds not in DATASETS:
        return None, ""
    n, folder, downloadable = DATASETS[ds]
    if folder is None:
        return n, ""
    path = os.path.join(root, folder)
    if ds == "imagenet":
        need = [os.path.join(path, split) for split in ("train", "val")]
        missing = [d for d in need if not os.path.isdir(d)]
        if missing:
            return n, (f"data: ImageNet is not on disk ({', '.join(missing)} missing; "
                       f"CONFIG_DATA_DIR, docs/data.md)")
        return n, ""
    if os.path.isdir(path) and os.listdir(path):
        return n, ""
    if cfg.data_download and downloadable:
        return n, ""                                     # torchvision fetches it at start
    return n, (f"data: {ds} is not on disk ({path} missing) and data_download is off; "
               f"put it there or set CONFIG_DATA_DOWNLOAD=y on a machine with network")


def gpu_check(cfg, visible: int) -> str:
    if cfg.device != "cuda" or visible >= cfg.gpus:
        return ""
    return (f"gpu: the preset runs on {cfg.gpus} GPU(s) (device=cuda, CONFIG_GPUS={cfg.gpus}) "
            f"but {visible} {'is' if visible == 1 else 'are'} visible on this machine")


def _bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_bytes(v) for v in obj)
    return 0


def check(spec, cfg, visible_gpus: int = 0) -> dict:
    row = {"run_id": cfg.run_id(), "model": cfg.model, "status": "FAIL", "reason": "",
           "params": 0, "est_peak_mb": 0.0, "gpu_mb": cfg.gpu_memory_gb * 1024,
           "device": cfg.device, "gpus": cfg.gpus, "batch_size": cfg.batch_size,
           "warnings": [], "planned_steps": cfg.max_steps or None, "cpu_step_s": None,
           "cpu_est_s": None}
    t0 = time.time()
    n_train, warn = data_check(cfg)
    row["warnings"] += [w for w in (warn, gpu_check(cfg, visible_gpus)) if w]
    if not cfg.max_steps and n_train:
        row["planned_steps"] = cfg.epochs * max(1, n_train // cfg.batch_size)
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
            t_step = time.perf_counter()
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
        step_s = time.perf_counter() - t_step           # the second step: past first-call costs
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
        # CPU seconds per step at the configured batch: the tiny step, scaled by samples
        # (and, for short example sequences, by length); crude, and for a GPU preset only
        # an upper bound of another machine's time
        row["cpu_step_s"] = step_s * cfg.batch_size / TINY * scale
        if row["planned_steps"]:
            row["cpu_est_s"] = row["cpu_step_s"] * row["planned_steps"]
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
    visible = torch.cuda.device_count() if any(c.device == "cuda" for c in cfgs) else 0
    rows = [check(spec, cfg, visible) for cfg in cfgs]
    if report:
        with open(report, "w") as f:
            json.dump(rows, f)
    else:
        for r in rows:
            print(f"{r['run_id']:<55} {r['params']:>12,} {r['est_peak_mb']:>10.0f} MB  "
                  f"{r['status']} {r['reason']}")
    return 0 if all(r["status"] == "OK" for r in rows) else 1
