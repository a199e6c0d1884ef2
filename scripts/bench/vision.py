"""Does vision training keep the GPU busy? The ResNets through the shared trainer
(lib/trainer.py) against a bare compiled training step of the same model on data already on
the GPU, in one process, bf16 autocast, channels_last, compiled; each ratio is against the
bare step measured in the same run:

  python -m scripts.bench.vision --out vision.json --table results/benchmarks.csv
  python -m scripts.bench.vision --smoke --out smoke.json      (CPU, tiny: checks the script)

cases (--cases, model:batch:data_path[:compile mode]; the default takes ~5 min on an H200)
  resnet18, CIFAR shape (32x32): data_path workers = torchvision's CIFAR-10 pipeline
             (RandomCrop + flip + ToTensor + Normalize per image) in DataLoader workers;
             gpu = lib/gpu_data.py, the split on the GPU as uint8 and each batch augmented
             there (CONFIG_RESNET18_DATA_ON_GPU)
  resnet50, ImageNet shape (224x224): pil = ImageFolder + PIL decode + RandomResizedCrop +
             flip + normalise in DataLoader workers (--pil-workers); gpu-decode = workers
             read the files' bytes, the batch is decoded by torchvision.io.decode_jpeg on
             the GPU and augmented there (lib/gpu_data.DecodedBatches,
             CONFIG_RESNET50_DECODE_GPU)
trainer      lib.trainer.run on the model's ModelSpec: SGD (momentum 0.9, lr 0.1), the
             trainer's sampler, metrics every 10 steps, no evaluation or checkpoint inside
             the window; img/s = median of the logged window rates after --warm steps
bare         the same model class and compile, the same optimizer built by lib/optim.py,
             one batch of random images already on the GPU, nothing else

Data, written here (no download): CIFAR-10's file format filled with random bytes (the
same decode and augmentation work as the real one), and an ImageFolder of synthetic JPEGs
of ImageNet's sizes (width ~ N(400, 60), height ~ N(350, 50), quality 90, smooth colours
plus noise, ~80 KB each), enough for the whole run inside one epoch. Each row: model, batch,
workers, data_path, compile_mode, trainer_img_s, bare_img_s, ratio (trainer / bare),
device, versions, date; --table appends them to the one results table.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from lib import fsio, optim, runconfig, trainer
from scripts.bench import machine, table

DEFAULT_CASES = ("resnet50:256:pil,resnet50:256:gpu-decode,resnet18:512:gpu,"   # new ones first
                 "resnet18:512:workers,resnet18:128:gpu:reduce-overhead")
SMOKE_CASES = "resnet18:32:workers,resnet18:32:gpu,resnet50:8:pil,resnet50:8:gpu-decode"
PATHS = {"resnet18": ("workers", "gpu"), "resnet50": ("pil", "gpu-decode")}
JPEG_CLASSES = 10


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


def _write_jpegs(job) -> int:
    """Write files [lo, hi) of one split; returns their bytes."""
    from PIL import Image
    folder, lo, hi, mean_hw, sd_hw = job
    rng, total = np.random.default_rng(lo), 0
    for i in range(lo, hi):
        h, w = (int(np.clip(rng.normal(m, s), m // 4, 4 * m)) for m, s in zip(mean_hw, sd_hw))
        base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        img = np.asarray(base.resize((w, h), Image.BICUBIC), dtype=np.float32)
        img = np.clip(img + rng.normal(0, 24, img.shape).astype(np.float32), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=90)
        path = os.path.join(folder, f"c{i % JPEG_CLASSES:02d}", f"{i:06d}.JPEG")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        total += buf.tell()
    return total


def fake_imagenet(root: str, n_train: int, n_val: int, mean_hw=(350, 400), sd_hw=(50, 60)) -> dict:
    """root/imagenet/{train,val}/cNN/*.JPEG, synthetic; returns the train files' count and
    mean size. Written by all cores, once per (root, n_train)."""
    done = os.path.join(root, "imagenet", f"done-{n_train}-{mean_hw[0]}.json")
    if os.path.exists(done):
        return fsio.read_json(done)
    shutil.rmtree(os.path.join(root, "imagenet"), ignore_errors=True)
    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        folder = os.path.join(root, "imagenet", split)
        for c in range(JPEG_CLASSES):
            os.makedirs(os.path.join(folder, f"c{c:02d}"))
        step = max(1, n // (4 * (os.cpu_count() or 1)))
        jobs += [(folder, lo, min(n, lo + step), mean_hw, sd_hw) for lo in range(0, n, step)]
    t0 = time.time()
    with ProcessPoolExecutor() as pool:
        sizes = list(pool.map(_write_jpegs, jobs))
    n_bytes = sum(s for s, j in zip(sizes, jobs) if j[0].endswith("train"))
    info = {"jpeg_files": n_train, "jpeg_mean_kb": round(n_bytes / n_train / 1e3, 1),
            "jpeg_write_s": round(time.time() - t0, 1)}
    fsio.atomic_write_json(done, info)
    return info


def spec_of(model: str):
    """(the model's ModelSpec, its Config class), found by name (runconfig's lookup)."""
    return (runconfig.model_part(model, "train", "SPEC", "a vision model of this repo"),
            runconfig.config_class(model))


def config(args, model: str, batch: int, path: str, mode: str, out_dir: str):
    cuda = not args.smoke
    _, Config = spec_of(model)
    steps = args.steps if model == "resnet18" else args.steps_r50
    common = dict(optimizer="sgd", lr=0.1, batch_size=batch, max_steps=steps, epochs=1,
                  device="cuda" if cuda else "cpu", precision="bf16" if cuda else "fp32",
                  compile=cuda, compile_mode=mode, log_interval=1 if args.smoke else 10,
                  eval_interval=10**6, eval_batches=1, checkpoint_interval=10**6,
                  monitor_interval=0.0, trackio=False, out_dir=out_dir)
    if model == "resnet18":
        return Config(dataset="cifar10", data_dir=args.data, width=8 if args.smoke else 64,
                      weight_decay=5e-4, num_workers=args.workers if path == "workers" else 0,
                      data_on_gpu=path == "gpu", **common).validate()
    return Config(dataset="imagenet", data_dir=args.data, width=4 if args.smoke else 64,
                  image_size=32 if args.smoke else 224, num_classes=JPEG_CLASSES,
                  weight_decay=1e-4, decode="gpu" if path == "gpu-decode" else "pil",
                  num_workers=args.pil_workers if path == "pil" else args.decode_workers,
                  **common).validate()


def bench_trainer(spec, cfg, warm: int) -> float:
    if os.path.exists(cfg.out_dir):
        shutil.rmtree(cfg.out_dir)
    rc = trainer.run(spec, trainer.resolve_paths(cfg))
    if rc != 0:
        raise SystemExit(f"trainer run failed (exit {rc}); see {cfg.out_dir}/train.log")
    rows = [r for r in fsio.read_jsonl(os.path.join(cfg.out_dir, "metrics.jsonl"))
            if r.get("kind") == "train" and r["step"] > warm]
    return statistics.median(r["throughput"] for r in rows)


def bench_bare(spec, cfg, size: int, classes: int, warm: int, steps: int) -> float:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = spec.build_model(cfg).to(device)
    step_model = torch.compile(model, **trainer.compile_options(cfg)) if cfg.compile else model
    opt = optim.build_optimizer(model, cfg)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.randn(cfg.batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (cfg.batch_size,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    graphs = trainer.uses_cudagraphs(cfg)

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with amp:
            loss = torch.nn.functional.cross_entropy(step_model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=not graphs)
    if graphs:
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


def check_decode(args, batch: int, device: str, size: int) -> dict:
    """Before the timed cases: the read-ahead loader (thread, side stream on a GPU) gives
    exactly the batches made in order without it; how far nvJPEG's pixels are from the CPU
    decoder's; and the rates of the decode path alone and of one core decoding with PIL
    (what each of the PIL path's workers can give)."""
    import itertools
    from types import SimpleNamespace
    from torchvision.io import ImageReadMode, decode_jpeg
    from lib import gpu_data, vision
    files = vision.EncodedFolder(os.path.join(args.data, "imagenet", "train"))
    cuda = device == "cuda"
    dev = gpu_data.DecodedBatches(files, size, vision.IMAGENET_MEAN, vision.IMAGENET_STD,
                                  device, channels_last=cuda, ahead=True)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = SimpleNamespace(batch_size=batch, grad_accum=1, seed=0, num_workers=args.decode_workers)
    ahead = [x for x, _ in itertools.islice(dev.loader(cfg, 0, 0), 3)]
    dev.ahead = False
    plain = [x for x, _ in itertools.islice(dev.loader(cfg, 0, 0), 3)]
    raw = [files[i][0] for i in range(min(64, len(files)))]
    diff = torch.cat([(g.cpu().int() - c.int()).abs().flatten() for g, c in
                      zip(dev.decode(raw), decode_jpeg(raw, mode=ImageReadMode.RGB))]).float()
    dev.ahead = True
    batches = dev.loader(cfg, 0, 1)
    next(batches)                           # past the workers' start
    sync()
    t0, n = time.perf_counter(), 0
    for x, _ in itertools.islice(batches, 6):
        n += len(x)
    sync()
    decode_rate = n / (time.perf_counter() - t0)
    batches.close()
    from torchvision import datasets, transforms
    pil = datasets.ImageFolder(files.root, transform=transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(vision.IMAGENET_MEAN, vision.IMAGENET_STD)]))
    t0, m = time.perf_counter(), min(200, len(pil))
    for i in range(m):
        pil[i]
    pil_rate = m / (time.perf_counter() - t0)
    out = {"ahead_equal": all(torch.equal(a, b) for a, b in zip(ahead, plain)),
           "nvjpeg_vs_cpu_max_level": int(diff.max()),
           "nvjpeg_vs_cpu_mean_level": round(float(diff.mean()), 3),
           "gpu_decode_path_img_s": round(decode_rate), "pil_img_s_one_core": round(pil_rate)}
    print(f"decode check: read-ahead batches {'equal' if out['ahead_equal'] else 'DIFFER'}; "
          f"nvJPEG vs CPU decode {diff.mean():.3f} levels mean, {int(diff.max())} max; GPU "
          f"decode path alone {decode_rate:,.0f} img/s; PIL pipeline {pil_rate:,.0f} img/s "
          f"on one core", flush=True)
    return out


def parse_cases(text: str) -> list:
    """"model:batch:data_path[:compile mode],..." -> [(model, batch, path, mode)]."""
    out = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) not in (3, 4) or parts[0] not in PATHS or parts[2] not in PATHS[parts[0]]:
            raise SystemExit(f"--cases: {item!r} is not model:batch:data_path[:mode] with a "
                             f"model and data path of {PATHS}")
        out.append((parts[0], int(parts[1]), parts[2], parts[3] if len(parts) == 4 else "default"))
    return out


def table_rows(rows: list, dtype: str) -> list:
    """The rows as results/benchmarks.csv takes them: the vision fields, and op/case/shape/ms
    in the columns every benchmark fills."""
    return [{**r, "op": "train_vision", "dtype": dtype, "pass": "train",
             "case": f"{r['model']} {r['case']} {r['data_path']} w{r['workers']} {r['compile_mode']}",
             "shape": f"batch {r['batch']}", "ms": 1e3 * r["batch"] / r["trainer_img_s"],
             "torch_ms": 1e3 * r["batch"] / r["bare_img_s"]} for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", default="", help="append the rows to this CSV (results/benchmarks.csv)")
    ap.add_argument("--cases", default="", help=f"default: {DEFAULT_CASES}")
    ap.add_argument("--workers", type=int, default=8, help="workers of resnet18's workers path")
    ap.add_argument("--pil-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="workers of resnet50's PIL path (default: all cores but one)")
    ap.add_argument("--decode-workers", type=int, default=4,
                    help="workers reading bytes for resnet50's GPU decode")
    ap.add_argument("--steps", type=int, default=120, help="resnet18's trainer optimizer steps")
    ap.add_argument("--warm", type=int, default=30, help="resnet18's steps before the timed window")
    ap.add_argument("--steps-r50", type=int, default=50, help="resnet50's trainer optimizer steps")
    ap.add_argument("--warm-r50", type=int, default=20, help="resnet50's steps before the window")
    ap.add_argument("--data", default="/tmp/bench_vision/data")
    ap.add_argument("--work", default="/tmp/bench_vision")
    ap.add_argument("--commit", default="", help="the commit measured, on the rows (default: "
                    "git's HEAD here, with -dirty)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    t_start = time.time()
    cases = parse_cases(args.cases or (SMOKE_CASES if args.smoke else DEFAULT_CASES))
    if args.smoke:
        args.steps, args.warm, args.workers, args.pil_workers = min(args.steps, 2), 1, 0, 0
        args.steps_r50, args.warm_r50, args.decode_workers = min(args.steps_r50, 2), 1, 0
    device = "cpu" if args.smoke else "cuda"
    meta = {"date": time.strftime("%Y-%m-%d"), **machine.versions(),
            "device": machine.device_name(device == "cuda"), "commit": args.commit or table.commit_of()}
    if any(m == "resnet18" for m, *_ in cases):
        fake_cifar10(args.data, *((2560, 128) if args.smoke else (50000, 10000)))
        allow_fake_cifar()
    r50 = [b for m, b, *_ in cases if m == "resnet50"]
    if r50:        # the whole run inside one epoch: no worker restart in the window
        meta.update(fake_imagenet(args.data, (args.steps_r50 + 2) * max(r50), 64,
                                  *(((40, 48), (8, 8)) if args.smoke else ())))
        print(f"synthetic ImageNet: {meta['jpeg_files']} JPEGs, {meta['jpeg_mean_kb']} KB "
              f"mean, written in {meta['jpeg_write_s']} s", flush=True)
    if any(p == "gpu-decode" for _, _, p, _ in cases):
        meta["decode_check"] = check_decode(args, max(r50), device, 32 if args.smoke else 224)
    rows, bare = [], {}
    for model, batch, path, mode in cases:
        t0 = time.time()
        spec, _ = spec_of(model)
        size = 32 if model == "resnet18" or args.smoke else 224
        steps, warm = ((args.steps, args.warm) if model == "resnet18" else
                       (args.steps_r50, args.warm_r50))
        classes = 10 if model == "resnet18" else JPEG_CLASSES
        if (model, batch, mode) not in bare:
            cfg = config(args, model, batch, PATHS[model][0], mode, os.path.join(args.work, "bare"))
            bare[model, batch, mode] = bench_bare(spec, cfg, size, classes, warm=max(3, warm // 2),
                                                  steps=max(5, steps // 2))
            torch._dynamo.reset()      # a second compile in one process needs it (env-facts.md)
        cfg = config(args, model, batch, path, mode,
                     os.path.join(args.work, f"{model}-{batch}-{path}"))
        assert runconfig.data_path(cfg) == path, (path, runconfig.data_path(cfg))
        got = bench_trainer(spec, cfg, warm)
        torch._dynamo.reset()
        ref = bare[model, batch, mode]
        rows.append({"model": model, "case": "cifar-shape" if model == "resnet18" else
                     f"imagenet-shape {size}", "batch": batch, "workers": cfg.num_workers,
                     "data_path": path, "compile_mode": mode, "trainer_img_s": got,
                     "bare_img_s": ref, "ratio": got / ref})
        print(f"{model} batch {batch} {path:<10} {mode:<15} workers {cfg.num_workers:>2}: trainer "
              f"{got:,.0f} img/s, bare {ref:,.0f} img/s, ratio {got / ref:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        # each case's row as soon as it is measured: a run cut short keeps what it has
        out = table_rows(rows, "bf16" if device == "cuda" else "fp32")
        meta["wall_s"] = round(time.time() - t_start, 1)
        fsio.atomic_write_json(args.out, {"meta": meta, "rows": out})
        if args.table:
            table.append(out[-1:], meta, "scripts/bench/vision.py", args.table,
                         commit=meta["commit"])
    print(f"{len(rows)} rows in {time.time() - t_start:.0f} s", flush=True)
    if not meta.get("decode_check", {}).get("ahead_equal", True):
        print("FAIL: the read-ahead loader's batches differ from those made without it",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
