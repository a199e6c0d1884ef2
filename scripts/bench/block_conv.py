"""ResNet-50 with 90 percent of its conv weights pruned in 64x64 blocks: what its convs cost
today, and what block-sparse convs would save (issue #23; docs/pruning.md says what it
would take).

  python -m scripts.bench.block_conv --out $OUT            (one GPU; ~2 min on an H200)
  python -m scripts.bench.block_conv --smoke --out /tmp/c  (CPU, tiny images: checks it)

today     ResNet-50 (channels_last, bf16 autocast, eager) at --batch x 224 x 224: a bare
          training step (forward, backward, SGD, and the pruner's masking of gradients and
          weights) and a no_grad forward, with dense weights and with 90 percent of every
          conv's 64x64 blocks zero (the pruner's [C_out, C_in*kh*kw] view). cuDNN multiplies
          the zeros like any other number: pruned / dense is the cost of pruning alone.
estimate  every conv of the network as the GEMM it is (im2col: M = B*H_out*W_out,
          K = C_in*kh*kw, N = C_out), timed with torch's conv (cuDNN), F.unfold (the copy an
          explicit im2col makes), the dense GEMM, and kernels.block_sparse_linear on the
          pruned weight, each replayed from a CUDA graph (GPU time; a Python call's host
          time exceeds most of these kernels'). A block-sparse implicit GEMM (the unfold
          done by the kernel's loads, no copy) is estimated by the block-sparse GEMM alone;
          an explicit im2col by unfold plus it. Summed over the network's convs, forward only.

Out: <out>/block_conv.json with both parts (per conv and totals) and the meta.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

import kernels
from kernels import autotune
from kernels import reference as ref
from lib import fsio
from resnet50.model import ResNet50
from scripts.bench import machine, table
from scripts.bench.timing import cpu_pair_ms, gpu_ms

BLOCK = 64


def conv_inputs(model, x):
    """(conv module name, the conv, its input shape) for every Conv2d in forward order."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: seen.append((n, m, a[0].shape)))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def prune(model, sparsity, block):
    """Zero `sparsity` of each conv's block x block blocks (random blocks, as ref does)."""
    g = torch.Generator().manual_seed(0)
    masks = {}
    with torch.no_grad():
        for n, m in model.named_modules():
            if isinstance(m, torch.nn.Conv2d):
                w2 = m.weight.detach().reshape(m.weight.shape[0], -1).cpu().float()
                pruned = ref.prune_blocks(w2, block, sparsity, generator=g)
                m.weight.copy_(pruned.reshape(m.weight.shape))
                masks[n] = m.weight != 0
    return masks


def timer(cuda, graphs=False):
    """GPU ms of one call (graphs: replayed from a CUDA graph, the GPU's time alone: a conv's
    kernels take 10-80 us, less than a Python call's host time), or CPU ms."""
    if cuda:
        return autotune.graph_median_ms if graphs else gpu_ms
    return lambda fn: cpu_pair_ms(fn, fn, rounds=3)[0]


def today(args, dev, cuda):
    """Bare train step and forward, dense vs block-pruned weights (cuDNN / torch convs)."""
    ms = timer(cuda)
    size = 224 if not args.smoke else 64
    out = {}
    for name in ("dense", "pruned"):
        torch.manual_seed(0)
        model = ResNet50(width=64 if not args.smoke else 16).to(dev).to(
            memory_format=torch.channels_last)
        masks = prune(model, args.sparsity, args.block) if name == "pruned" else {}
        params = dict(model.named_parameters())
        mp = [(params[n + ".weight"], mk) for n, mk in masks.items()]
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(args.batch, 3, size, size, device=dev).to(
            memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (args.batch,), device=dev)
        amp = dict(device_type=dev.type, dtype=torch.bfloat16)

        def step():
            with torch.autocast(**amp):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            if mp:      # the pruner's per-step cost: gradients, then weights (lib/pruning.py)
                torch._foreach_mul_([p.grad for p, _ in mp], [m for _, m in mp])
            opt.step()
            if mp:
                with torch.no_grad():
                    torch._foreach_mul_([p for p, _ in mp], [m for _, m in mp])
            opt.zero_grad(set_to_none=False)

        def forward():
            with torch.no_grad(), torch.autocast(**amp):
                model(x)
        model.train()
        train_ms = ms(step)
        model.eval()
        out[name] = {"train_ms": train_ms, "infer_ms": ms(forward),
                     "img_s_train": args.batch / train_ms * 1e3}
    return {**out, "train_speedup": out["dense"]["train_ms"] / out["pruned"]["train_ms"],
            "infer_speedup": out["dense"]["infer_ms"] / out["pruned"]["infer_ms"]}


def estimate(args, dev, cuda):
    """Each conv as an im2col GEMM: cuDNN conv vs unfold, dense GEMM, block-sparse GEMM."""
    ms = timer(cuda, graphs=True)
    size = 224 if not args.smoke else 64
    model = ResNet50(width=64 if not args.smoke else 16).to(dev).eval()
    x = torch.randn(args.batch, 3, size, size, device=dev)
    rows, memo = [], {}
    kernels.set_backend("triton" if cuda else "cpu")
    dt = torch.bfloat16 if cuda else torch.float32
    for name, conv, shape in conv_inputs(model, x):
        kh, kw = conv.kernel_size
        key = (tuple(shape), conv.out_channels, kh, conv.stride[0], conv.padding[0])
        if key not in memo:
            xi = torch.randn(shape, device=dev, dtype=dt).to(memory_format=torch.channels_last)
            w = ref.prune_blocks(conv.weight.detach().reshape(conv.out_channels, -1).float().cpu(),
                                 args.block, args.sparsity).to(dev, dt)
            w4 = w.reshape(conv.weight.shape).contiguous(memory_format=torch.channels_last)
            st, pd = conv.stride, conv.padding

            def cols():
                c = F.unfold(xi, (kh, kw), padding=pd, stride=st)        # [B, K, L]
                return c.transpose(1, 2).reshape(-1, c.shape[1])
            a = cols().contiguous()
            memo[key] = {
                "M": a.shape[0], "K": a.shape[1], "N": conv.out_channels,
                "conv_ms": ms(lambda: F.conv2d(xi, w4, stride=st, padding=pd)),
                "unfold_ms": ms(lambda: cols().contiguous()),
                "dense_gemm_ms": ms(lambda: a @ w.t()),
                "sparse_gemm_ms": ms(lambda: kernels.block_sparse_linear(a, w, args.block))}
        rows.append({"conv": name, "kernel": f"{kh}x{kw}/{conv.stride[0]}", **memo[key]})
    tot = {k: sum(r[k] for r in rows) for k in ("conv_ms", "unfold_ms", "dense_gemm_ms",
                                                 "sparse_gemm_ms")}
    return {"convs": rows, "total": tot,
            "implicit_gemm_speedup": tot["conv_ms"] / tot["sparse_gemm_ms"],
            "explicit_im2col_speedup": tot["conv_ms"] / (tot["unfold_ms"] + tot["sparse_gemm_ms"]),
            "dense_gemm_vs_conv": tot["conv_ms"] / tot["dense_gemm_ms"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--block", type=int, default=BLOCK)
    ap.add_argument("--parts", nargs="+", default=["today", "estimate"],
                    choices=["today", "estimate"])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--table", default=table.TABLE)
    ap.add_argument("--commit", help="the commit measured (default: this tree's HEAD; a "
                    "copy of the tree without its .git, as on a lent GPU machine, needs it)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        args.batch, args.block = 2, 16
    dev = torch.device("cuda" if cuda else "cpu")
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), **machine.versions(),
            "gpu": machine.device_name(cuda), "commit": args.commit or table.commit_of(),
            "batch": args.batch, "sparsity": args.sparsity, "block": args.block,
            "smoke": args.smoke}
    report = {"meta": meta}
    if "today" in args.parts:
        report["today"] = today(args, dev, cuda)
    if "estimate" in args.parts:
        report["estimate"] = estimate(args, dev, cuda)
    os.makedirs(args.out, exist_ok=True)
    fsio.atomic_write_json(os.path.join(args.out, "block_conv.json"), report)
    t, e = report.get("today", {}), report.get("estimate", {})
    print(json.dumps({"today": {k: t[k] for k in ("train_speedup", "infer_speedup") if t},
                      "estimate": {k: v for k, v in e.items() if k != "convs"}}, indent=1))
    if not args.smoke:
        common = {"op": "resnet50_block_conv", "shape": f"{args.batch}x224x224",
                  "dtype": "bfloat16"}
        rows = [{**common, "case": f"today {k} ({int(args.sparsity * 100)}% of "
                 f"{args.block}x{args.block} conv blocks)", "layout": "pruned vs dense cuDNN",
                 "pass": p, "ratio": round(t[k], 4)}
                for k, p in (("train_speedup", "train"), ("infer_speedup", "fwd")) if t]
        rows += [{**common, "case": f"estimate {k}", "layout": "vs cuDNN convs, sum of convs",
                  "pass": "fwd", "ratio": round(e[k], 4)}
                 for k in ("implicit_gemm_speedup", "explicit_im2col_speedup",
                           "dense_gemm_vs_conv") if e]
        table.append(rows, meta, "block_conv.json", path=args.table, commit=meta["commit"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
