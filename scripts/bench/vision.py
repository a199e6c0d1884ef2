"""Does vision training keep the GPU busy? ResNet-18 on CIFAR-shaped data through the shared
trainer (lib/trainer.py) against a bare compiled training step of the same model on data
already on the GPU, in one process, bf16 autocast, channels_last, compiled:

  python -m scripts.bench.vision --out vision.json --table results/benchmarks.csv
  python -m scripts.bench.vision --smoke --out smoke.json      (CPU, tiny: checks the script)

data paths   workers: torchvision's CIFAR-10 pipeline (RandomCrop + flip + ToTensor +
             Normalize per image) in DataLoader workers; gpu: lib/gpu_data.py, the split on
             the GPU as uint8 and each batch augmented there (CONFIG_RESNET18_DATA_ON_GPU)
trainer      lib.trainer.run on resnet18's ModelSpec: SGD (momentum 0.9, lr 0.1, weight decay
             5e-4), the trainer's sampler, metrics every 10 steps, no evaluation or
             checkpoint inside the window; img/s = median of the logged window rates after
             --warm steps
bare         the same model class and compile, the same optimizer built by lib/optim.py,
             one batch of random images already on the GPU, nothing else

The data set is CIFAR-10's file format filled with random bytes (no download here): the same
decode and augmentation work as the real one. Each row: model, batch, workers, data_path,
compile_mode, trainer_img_s, bare_img_s, ratio (trainer / bare), device, versions, date;
--table appends them to the one results table.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time

import numpy as np
import torch

from lib import fsio, optim, trainer
from resnet18.config import Config
from resnet18.train import SPEC
from scripts.bench import machine, table


def fake_cifar10(root: str, n_train: int = 50000, n_test: int = 10000) -> str:
    """CIFAR-10's python format under root/cifar-10-batches-py, random pixels, real labels."""
    folder = os.path.join(root, "cifar-10-batches-py")
    if os.path.exists(os.path.join(folder, "test_batch")):
        return root
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    per = n_train // 5
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per
        doc = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
               "labels": rng.integers(0, 10, n).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(doc, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return root


def allow_fake_cifar() -> None:
    """torchvision checks the real files' md5 sums; the random ones are the real format."""
    from torchvision.datasets import cifar
    cifar.check_integrity = lambda *a, **k: True
    cifar.CIFAR10._check_integrity = lambda self: True


def config(args, batch: int, data_on_gpu: bool, workers: int, out_dir: str) -> Config:
    cuda = not args.smoke
    return Config(dataset="cifar10", data_dir=args.data, width=8 if args.smoke else 64,
                  optimizer="sgd", lr=0.1, weight_decay=5e-4, batch_size=batch,
                  max_steps=args.steps, epochs=1, device="cuda" if cuda else "cpu",
                  precision="bf16" if cuda else "fp32", compile=cuda,
                  compile_mode=args.compile_mode, num_workers=workers, data_on_gpu=data_on_gpu,
                  log_interval=10, eval_interval=10**6, eval_batches=1,
                  checkpoint_interval=10**6, monitor_interval=0.0, trackio=False,
                  out_dir=out_dir).validate()


def bench_trainer(cfg, warm: int) -> float:
    if os.path.exists(cfg.out_dir):
        import shutil
        shutil.rmtree(cfg.out_dir)
    rc = trainer.run(SPEC, trainer.resolve_paths(cfg))
    if rc != 0:
        raise SystemExit(f"trainer run failed (exit {rc}); see {cfg.out_dir}/train.log")
    rows = [r for r in fsio.read_jsonl(os.path.join(cfg.out_dir, "metrics.jsonl"))
            if r.get("kind") == "train" and r["step"] > warm]
    return statistics.median(r["throughput"] for r in rows)


def bench_bare(cfg, warm: int, steps: int) -> float:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = SPEC.build_model(cfg).to(device)
    step_model = torch.compile(model, **trainer.compile_options(cfg)) if cfg.compile else model
    opt = optim.build_optimizer(model, cfg)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.randn(cfg.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def step():
        if trainer.uses_cudagraphs(cfg):
            torch.compiler.cudagraph_mark_step_begin()
        with amp:
            loss = torch.nn.functional.cross_entropy(step_model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=not trainer.uses_cudagraphs(cfg))
    if trainer.uses_cudagraphs(cfg):
        trainer.make_grads(model)
    for _ in range(warm):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.time() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", default="", help="append the rows to this CSV (results/benchmarks.csv)")
    ap.add_argument("--batches", default="128,512")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers of the workers path")
    ap.add_argument("--paths", default="workers,gpu")
    ap.add_argument("--steps", type=int, default=120, help="trainer optimizer steps")
    ap.add_argument("--warm", type=int, default=30, help="trainer steps before the timed window")
    ap.add_argument("--compile-mode", default="default")
    ap.add_argument("--data", default="/tmp/bench_vision/data")
    ap.add_argument("--work", default="/tmp/bench_vision")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.warm, args.workers = min(args.steps, 12), 2, 0
    fake_cifar10(args.data, *((2560, 128) if args.smoke else (50000, 10000)))
    allow_fake_cifar()
    device = "cpu" if args.smoke else "cuda"
    meta = {"date": time.strftime("%Y-%m-%d"), **machine.versions(),
            "device": machine.device_name(device == "cuda")}
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        bare_cfg = config(args, batch, False, 0, os.path.join(args.work, "bare"))
        bare = bench_bare(bare_cfg, warm=max(3, args.warm // 3), steps=max(5, args.steps // 2))
        torch._dynamo.reset()          # a second compile in one process needs it (env-facts.md)
        for path in args.paths.split(","):
            workers = args.workers if path == "workers" else 0
            cfg = config(args, batch, path == "gpu", workers,
                         os.path.join(args.work, f"run-{batch}-{path}"))
            got = bench_trainer(cfg, args.warm)
            torch._dynamo.reset()
            row = {"model": "resnet18", "case": "cifar-shape", "batch": batch, "workers": workers,
                   "data_path": path, "compile_mode": args.compile_mode,
                   "trainer_img_s": got, "bare_img_s": bare, "ratio": got / bare}
            rows.append(row)
            print(f"resnet18 batch {batch} {path:<7} workers {workers:>2}: trainer "
                  f"{got:,.0f} img/s, bare {bare:,.0f} img/s, ratio {got / bare:.3f}", flush=True)
    with open(args.out, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    if args.table:
        table.append([{"op": "train_vision", "case": f"{r['model']} {r['case']} {r['data_path']} "
                       f"w{r['workers']} {r['compile_mode']}", "shape": f"batch {r['batch']}",
                       "dtype": "bf16" if device == "cuda" else "fp32", "pass": "train",
                       "ms": 1e3 * r["batch"] / r["trainer_img_s"],
                       "torch_ms": 1e3 * r["batch"] / r["bare_img_s"], "ratio": r["ratio"]}
                      for r in rows], meta, "scripts/bench/vision.py", args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
