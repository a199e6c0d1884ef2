"""The cases of scripts/bench/kernel_ops.py, one function an --ops section: the shapes each
times and how it checks ours against torch's and a float64 reference (kernels.reference).

  matmul     GPT-2 124M's linears, ResNet im2col GEMMs, 4096^3 (or --shapes MxKxN):
             forward in both layouts, fwd+bwd without a bias and with one, bias+gelu fused
  attention  causal, head dim 64 and 128, T = 1k..8k at 16k tokens, vs SDPA flash (cuDNN too)
  sparse     block-sparse linear (90%, and 50-95% at one shape) vs dense F.linear;
             2:4 semi-structured vs dense (CUDA)
  overhead   host time per call at tiny shapes (CUDA)
  memory     CPU attention peak memory against T (--device cpu)

Each adds its rows to a kernel_harness.Bench, which times them.
"""
from __future__ import annotations

import importlib
import itertools

import torch
import torch.nn.functional as F

import kernels
from kernels import reference as ref
from scripts.bench.kernel_harness import Bench
from scripts.bench.timing import gpu_ms, per_call_us

GPT2 = [("gpt2 attn.c_attn", 16384, 768, 2304), ("gpt2 attn.c_proj", 16384, 768, 768),
        ("gpt2 mlp.c_fc", 16384, 768, 3072), ("gpt2 mlp.c_proj", 16384, 3072, 768)]
# ResNet 3x3 convolutions as im2col GEMMs at batch 16, 224x224 (M = B*H*W, K = C_in*9,
# N = C_out), and ResNet-50's classifier at batch 256
RESNET = [("resnet 3x3 conv 56x56x64", 50176, 576, 64),
          ("resnet 3x3 conv 28x28x128", 12544, 1152, 128),
          ("resnet 3x3 conv 14x14x256", 3136, 2304, 256),
          ("resnet 3x3 conv 7x7x512", 784, 4608, 512),
          ("resnet50 fc", 256, 2048, 1000)]


def rnd(*shape, dtype, device, requires_grad=False, scale=1.0):
    t = torch.randn(*shape, device=device, dtype=torch.float32) * scale
    return t.to(dtype).requires_grad_(requires_grad)


# --- matmul -----------------------------------------------------------------------------------
def parse_shapes(texts) -> list[tuple]:
    """--shapes MxKxN ...: the user's own products, as (name, M, K, N)."""
    shapes = []
    for t in texts:
        dims = t.lower().split("x")
        if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise SystemExit(f"error: --shapes {t!r} is not MxKxN with positive integers "
                             f"(e.g. 256x2048x1000: M rows, K inner, N output columns)")
        shapes.append((t.lower(), *map(int, dims)))
    return shapes


def bench_matmul(b: Bench, dtype):
    dev = b.device
    # forward cases (name, M, K, N, layout), and the training-step cases (name, M, K, N)
    if b.shapes:        # the user's products, in both layouts and through a training step
        cases = [(name, m, k, n, layout) for name, m, k, n in b.shapes
                 for layout in ("matmul", "linear")]
        train_cases = b.shapes
    elif b.cuda:
        cases = [(name, m, k, n, "linear") for name, m, k, n in GPT2] + \
                [(name, m, k, n, "matmul") for name, m, k, n in GPT2] + \
                [(name, m, k, n, "matmul") for name, m, k, n in RESNET] + \
                [(name, m, k, n, "linear") for name, m, k, n in RESNET if "fc" in name] + \
                [("square 4096", 4096, 4096, 4096, "matmul")]
        train_cases = GPT2
    else:
        cases = [("cpu linear", 2048, 768, 768, "linear"),
                 ("cpu matmul", 2048, 768, 3072, "matmul")]
        train_cases = [("cpu linear", 2048, 768, 768)]
    for name, m, k, n, layout in cases:
        label = f"matmul {name} {layout}"
        if b.skip(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev)
        w = rnd(n, k, dtype=dtype, device=dev, scale=k ** -0.5)   # Linear weight [N, K]
        wt = w.t().contiguous()                                    # matmul operand [K, N]
        if layout == "linear":
            ours, theirs = (lambda: kernels.linear(x, w)), (lambda: F.linear(x, w))
        else:
            ours, theirs = (lambda: kernels.matmul(x, wt)), (lambda: torch.matmul(x, wt))
        if b.precompile:
            ours()
            continue
        ms, tms = b.ms2(ours, theirs)
        expected = x.double() @ w.double().t()
        flops = 2.0 * m * n * k
        nbytes = (m * k + k * n + m * n) * x.element_size()
        row = b.add(op="matmul", case=name, layout=layout, shape=[m, k, n],
                    dtype=str(dtype)[6:], **{"pass": "fwd"}, ms=ms, torch_ms=tms,
                    ratio=tms / ms, tflops=flops / ms / 1e9, torch_tflops=flops / tms / 1e9,
                    gbps=nbytes / ms / 1e6, err=ref.rel_err(ours(), expected),
                    torch_err=ref.rel_err(theirs(), expected))
        del expected
        # the same products replayed from CUDA graphs: on a slow host a timed call of a small
        # product measures the host (a GPT-2 fwd row read 0.40x on one lease, 0.92-1.0x on others)
        b.graph_row(label, ours, theirs, row, flops)

    # training step (forward + both backward matmuls), without a bias and with one (its
    # gradient a separate sum over dZ); then the fused epilogue on GPT-2's MLP
    variants = (("linear", False), ("linear+bias", True))
    for (name, m, k, n), (layout, has_bias) in itertools.product(train_cases, variants):
        label = f"linear fwd+bwd {name}" + (f" {layout}" if has_bias else "")
        if b.skip(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev, requires_grad=True)
        w = rnd(n, k, dtype=dtype, device=dev, scale=k ** -0.5, requires_grad=True)
        bias = rnd(n, dtype=dtype, device=dev, requires_grad=True) if has_bias else None
        gy = rnd(m, n, dtype=dtype, device=dev)
        leaves = [t for t in (x, w, bias) if t is not None]

        def step(f):
            return lambda: f(x, w, bias).backward(gy)
        if b.precompile:
            step(kernels.linear)()
            continue
        ms, tms = b.ms2(step(kernels.linear), step(F.linear), grad_to_none=leaves)
        for t in leaves:
            t.grad = None
        step(kernels.linear)()
        leaves6 = [ref.upcast(t) for t in leaves]
        F.linear(*leaves6).backward(gy.double())
        err = max(ref.rel_err(t.grad, t6.grad) for t, t6 in zip(leaves, leaves6))
        flops = 6.0 * m * n * k
        row = b.add(op="matmul", case=name, layout=layout, shape=[m, k, n],
                    dtype=str(dtype)[6:], **{"pass": "fwd+bwd"}, ms=ms, torch_ms=tms,
                    ratio=tms / ms, tflops=flops / ms / 1e9, torch_tflops=flops / tms / 1e9,
                    err=err)
        b.graph_row(label, step(kernels.linear), step(F.linear), row, flops)

    if b.cuda and not b.shapes:   # bias + gelu fused in the epilogue vs addmm then F.gelu
        name, m, k, n = GPT2[2]
        label = "matmul bias+gelu"
        if not b.skip(label):
            x = rnd(m, k, dtype=dtype, device=dev)
            wt = rnd(k, n, dtype=dtype, device=dev, scale=k ** -0.5)
            bias = rnd(n, dtype=dtype, device=dev)
            ours = lambda: kernels.matmul(x, wt, bias, activation="gelu")  # noqa: E731
            if b.precompile:
                ours()
            else:
                theirs = lambda: F.gelu(torch.addmm(bias, x, wt))  # noqa: E731
                ms, tms = b.ms2(ours, theirs)
                expected = ref.matmul(x.double(), wt.double(), bias.double(), "gelu")
                flops = 2.0 * m * n * k
                b.add(op="matmul", case=name + " +bias+gelu", layout="matmul",
                      shape=[m, k, n], dtype=str(dtype)[6:], **{"pass": "fwd"}, ms=ms,
                      torch_ms=tms, ratio=tms / ms, tflops=flops / ms / 1e9,
                      torch_tflops=flops / tms / 1e9, err=ref.rel_err(ours(), expected),
                      torch_err=ref.rel_err(theirs(), expected))


# --- attention --------------------------------------------------------------------------------
def _sdpa_flash(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _sdpa_cudnn(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench_attention(b: Bench, dtype):
    dev = b.device
    if b.cuda:
        shapes = [(16384 // t, 768 // d, t, d) for d in (64, 128) for t in (1024, 2048, 4096, 8192)]
        passes = ("fwd+bwd", "fwd")
        theirs_fn, theirs_name = _sdpa_flash, "sdpa flash"
    else:
        shapes = [(1, 4, t, 64) for t in (512, 1024, 2048)]
        passes = ("fwd+bwd", "fwd")
        theirs_fn, theirs_name = (lambda q, k, v, c: F.scaled_dot_product_attention(
            q, k, v, is_causal=c)), "sdpa"
    causal = True
    for bsz, h, t, d in shapes:
        for ps in passes:
            label = f"attention {bsz}x{h}x{t}x{d} {ps}"
            if b.skip(label):
                continue
            grad = ps == "fwd+bwd"
            q, k, v = (rnd(bsz, h, t, d, dtype=dtype, device=dev, requires_grad=grad)
                       for _ in range(3))
            do = rnd(bsz, h, t, d, dtype=dtype, device=dev)

            def make(f):
                if grad:
                    return lambda: f(q, k, v, causal).backward(do)
                return lambda: f(q, k, v, causal)
            ours = make(lambda q, k, v, c: kernels.attention(q, k, v, causal=c))
            if b.precompile:
                ours()
                continue
            ms, tms = b.ms2(ours, make(theirs_fn), grad_to_none=[q, k, v] if grad else None)
            # error on a slice (batch 0, heads 0-1): the float64 reference is O(T^2)
            sl = (slice(0, 1), slice(0, 2))
            qs, ks, vs = (ref.upcast(x[sl].detach().requires_grad_(grad)) for x in (q, k, v))
            expected = ref.attention(qs, ks, vs, causal=causal)
            out = kernels.attention(q, k, v, causal=causal)
            err = ref.rel_err(out[sl], expected)
            terr = ref.rel_err(theirs_fn(q, k, v, causal)[sl], expected)
            if grad:
                for x in (q, k, v):
                    x.grad = None
                out.backward(do)
                expected.backward(do[sl].double())
                err = max([err] + [ref.rel_err(x.grad[sl], xs.grad)
                                   for x, xs in ((q, qs), (k, ks), (v, vs))])
            del expected, out
            flops = 4.0 * bsz * h * t * t * d * (0.5 if causal else 1.0) * (3.5 if grad else 1.0)
            nbytes = (12 if grad else 4) * bsz * h * t * d * q.element_size()
            row = b.add(op="attention", case=f"causal d{d} T{t}", layout=theirs_name,
                        shape=[bsz, h, t, d], dtype=str(dtype)[6:], **{"pass": ps}, ms=ms,
                        torch_ms=tms, ratio=tms / ms, tflops=flops / ms / 1e9,
                        torch_tflops=flops / tms / 1e9, gbps=nbytes / ms / 1e6, err=err,
                        torch_err=terr)
            if grad:
                b.graph_row(label, ours, make(theirs_fn), row, flops)
            if b.cuda and grad:   # for reference: torch's cuDNN backend, faster than flash
                try:
                    cms = gpu_ms(make(_sdpa_cudnn), grad_to_none=[q, k, v])
                except Exception as exc:
                    b.skipped.append(f"{label} vs sdpa cudnn: {type(exc).__name__}: {exc}")
                    continue
                b.add(op="attention", case=f"causal d{d} T{t}", layout="sdpa cudnn",
                      shape=[bsz, h, t, d], dtype=str(dtype)[6:], **{"pass": ps}, ms=ms,
                      torch_ms=cms, ratio=cms / ms, tflops=flops / ms / 1e9,
                      torch_tflops=flops / cms / 1e9, err=err)


# --- sparse -----------------------------------------------------------------------------------
def bench_sparse(b: Bench, dtype):
    dev = b.device
    if b.cuda:
        cases = [(16384, 4096, 4096, 128, 0.9), (16384, 4096, 4096, 64, 0.9),
                 (8192, 8192, 8192, 128, 0.9), (16384, 768, 3072, 64, 0.9),
                 (16384, 3072, 768, 64, 0.9), (16384, 4096, 4096, 128, 0.5),
                 (16384, 4096, 4096, 128, 0.75), (16384, 4096, 4096, 128, 0.95)]
    else:
        cases = [(2048, 1024, 1024, 64, 0.9), (2048, 1024, 1024, 64, 0.5),
                 (2048, 768, 3072, 64, 0.9)]
    g = torch.Generator().manual_seed(0)
    for m, k, n, block, sparsity in cases:
        label = f"block_sparse {m}x{k}x{n} b{block} s{sparsity}"
        if b.skip(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev)
        w = ref.prune_blocks(torch.randn(n, k, generator=g) * k ** -0.5, block, sparsity,
                             generator=g).to(dev, dtype)
        ours = lambda: kernels.block_sparse_linear(x, w, block)  # noqa: E731
        if b.precompile:
            ours()
            continue
        ms, tms = b.ms2(ours, lambda: F.linear(x, w))
        expected = x.double() @ w.double().t()
        density = float((w != 0).float().mean())
        flops = 2.0 * m * n * k * density
        nbytes = (m * k + n * k * density + m * n) * x.element_size()
        b.add(op="block_sparse", case=f"{int(sparsity * 100)}% of {block}x{block} blocks",
              layout="vs dense F.linear", shape=[m, k, n], dtype=str(dtype)[6:],
              **{"pass": "fwd"}, ms=ms, torch_ms=tms, ratio=tms / ms, tflops=flops / ms / 1e9,
              torch_tflops=2.0 * m * n * k / tms / 1e9, gbps=nbytes / ms / 1e6,
              err=ref.rel_err(ours(), expected), torch_err=ref.rel_err(F.linear(x, w), expected))

    if not b.cuda or b.precompile:
        return
    semi = importlib.import_module("kernels.semi_structured")
    for m, k, n in ((16384, 768, 3072), (16384, 3072, 768), (8192, 8192, 8192)):
        label = f"2:4 {m}x{k}x{n}"
        if b.over_budget(label):
            continue
        x = rnd(m, k, dtype=dtype, device=dev)
        w = ref.prune_2_4(rnd(n, k, dtype=dtype, device=dev, scale=k ** -0.5))
        ok, why = semi.semi_structured_support(w)
        if not ok:
            b.skipped.append(f"{label}: {why}")
            continue
        try:
            ms = gpu_ms(lambda: semi.semi_structured_linear(x, w))
        except Exception as exc:   # cuSPARSELt/CUTLASS missing in this torch build
            b.skipped.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        tms = gpu_ms(lambda: F.linear(x, w))
        expected = x.double() @ w.double().t()
        b.add(op="semi_2_4", case="2:4 to_sparse_semi_structured", layout="vs dense F.linear",
              shape=[m, k, n], dtype=str(dtype)[6:], **{"pass": "fwd"}, ms=ms, torch_ms=tms,
              ratio=tms / ms, tflops=2.0 * m * n * k / 2 / ms / 1e9,
              torch_tflops=2.0 * m * n * k / tms / 1e9,
              err=ref.rel_err(semi.semi_structured_linear(x, w), expected))


# --- per-call host overhead --------------------------------------------------------------------
def bench_overhead(b: Bench, dtype):
    """Host time per call at tiny shapes (the GPU work is ~us): what a call costs in Python
    and launches, ours vs torch's."""
    if not b.cuda or b.precompile:
        return
    dev = b.device
    x = rnd(64, 64, dtype=dtype, device=dev, requires_grad=True)
    w = rnd(64, 64, dtype=dtype, device=dev, requires_grad=True)
    q, k, v = (rnd(1, 1, 64, 64, dtype=dtype, device=dev, requires_grad=True) for _ in range(3))

    cases = [
        ("linear 64x64x64 fwd", lambda: kernels.linear(x.detach(), w.detach()),
         lambda: F.linear(x.detach(), w.detach())),
        ("linear 64x64x64 fwd+bwd", lambda: kernels.linear(x, w).sum().backward(),
         lambda: F.linear(x, w).sum().backward()),
        ("attention 1x1x64x64 fwd", lambda: kernels.attention(q.detach(), k.detach(), v.detach()),
         lambda: _sdpa_flash(q.detach(), k.detach(), v.detach(), True)),
        ("attention 1x1x64x64 fwd+bwd", lambda: kernels.attention(q, k, v).sum().backward(),
         lambda: _sdpa_flash(q, k, v, True).sum().backward()),
    ]
    for name, ours, theirs in cases:
        us, tus = per_call_us(ours), per_call_us(theirs)
        b.add(op="overhead", case=name, layout="host us per call", shape=[64, 64],
              dtype=str(dtype)[6:], **{"pass": name.split()[-1]}, ms=us / 1e3,
              torch_ms=tus / 1e3, ratio=tus / us)


# --- CPU memory -------------------------------------------------------------------------------
def bench_memory(b: Bench):
    from kernels import verify
    for t in (1024, 2048, 4096, 8192, 16384):
        label = f"memory T{t}"
        if b.over_budget(label):
            continue
        row = {"op": "attention_memory", "case": f"causal d64 T{t}", "shape": [1, 1, t, 64],
               "dtype": "float32", "pass": "fwd+bwd"}
        for name in ("cpu", "torch", "reference"):
            if name == "reference" and t > 8192:
                row["reference_mib"] = None      # 4 x T^2 bytes per score matrix: skipped
                continue
            row[f"{name}_mib"] = round(verify.attention_peak_mb(name, t), 1)
        b.rows.append({**row, **b.meta})
        print(f"memory T={t}: {row}", flush=True)
