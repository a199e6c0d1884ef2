"""GPU-only checks (skipped without CUDA): tuning and its cache on a real device, 2:4 sparse
tensor cores, bf16 training step through kernels.Linear and attention."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

import kernels
from kernels import autotune
from kernels import reference as ref
from kernels import verify

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_autotune_caches_on_the_device(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KERNELS_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "TUNER", autotune.Autotuner())
    kernels.set_backend("triton")
    a = torch.randn(1000, 256, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(256, 384, device="cuda", dtype=torch.bfloat16)
    kernels.matmul(a, b)
    assert len(autotune.TUNER.tuned) == 1
    assert autotune.cache_file(torch.cuda.get_device_name()).exists()
    monkeypatch.setattr(autotune, "TUNER", autotune.Autotuner())   # "a second run"
    out = kernels.matmul(a, b)
    assert autotune.TUNER.tuned == []
    assert ref.rel_err(out, a.double() @ b.double()) < 1e-2


def test_semi_structured_2_4_matches_dense():
    semi = importlib.import_module("kernels.semi_structured")
    w = ref.prune_2_4(torch.randn(256, 512, device="cuda", dtype=torch.float16))
    ok, why = semi.semi_structured_support(w)
    if not ok:
        pytest.skip(why)
    x = torch.randn(128, 512, device="cuda", dtype=torch.float16, requires_grad=True)
    y = semi.semi_structured_linear(x, w)
    assert ref.rel_err(y, x.double() @ w.double().t()) < 2e-3
    y.sum().backward()
    assert ref.rel_err(x.grad, torch.ones(128, 256, device="cuda").double() @ w.double()) < 2e-3


def test_bf16_training_step_through_kernels():
    torch.manual_seed(0)
    kernels.set_backend("triton")
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, 64)).cuda()
    kernels.swap_linear(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(512, 64, device="cuda")
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            q = model(x).view(8, 64, 4, 16).transpose(1, 2)
            loss = kernels.attention(q, q, q, causal=True).float().square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def forced_gelu_launches(plan, m, k, n, a_column_major=False, calls=1):
    """launch() with a forced plan, bias and gelu (Z stored), NaN-poisoned, `calls` times on
    bf16 a [m, k] (column-major if asked: a Linear's dW reads dZ^T) and b [k, n]: Z and C of
    the first call against float64; returns every call's C."""
    mm = importlib.import_module("kernels.matmul")
    a = torch.randn(k, m, device="cuda", dtype=torch.bfloat16).t() if a_column_major else \
        torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = (torch.randn(k, n, device="cuda") / k ** 0.5).to(torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    with kernels.poisoned():
        outs = [mm.launch(a, b, bias, "gelu", store_preact=True, config=plan)
                for _ in range(calls)]
    pre = a.double() @ b.double() + bias.double()
    assert ref.rel_err(outs[0][1], pre) < 1e-2
    assert ref.rel_err(outs[0][0], ref.activate(pre, "gelu")) < 1e-2
    return [c for c, _ in outs]


@pytest.mark.parametrize("shape", [(127, 129, 131), (2048, 768, 2304), (4096, 3072, 768)])
def test_persistent_matmul_plan_on_the_gpu(shape):
    """The persistent kernel (a tuning candidate unless KERNELS_PERSISTENT=0), forced."""
    plan = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3, "PERSISTENT": 1}
    forced_gelu_launches(plan, *shape)


@pytest.mark.parametrize("shape", [(257, 4099, 1001), (768, 16384, 768), (3, 8192, 5)])
@pytest.mark.parametrize("tile", [(128, 128, 64, 8, 4), (64, 64, 64, 4, 4)])
def test_stream_k_plan_on_the_gpu(shape, tile):
    """The stream-K kernel (kernels/experimental/stream_k.py: never tuned in), forced, with
    all programs resident and spinning on each other's flags: against float64,
    NaN-poisoned, and identical bits on a second call."""
    bm, bn, bk, w, s = tile
    plan = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": w,
            "num_stages": s, "STREAM_K": 1}
    c, again = forced_gelu_launches(plan, *shape, calls=2)
    assert torch.equal(c, again)


@pytest.mark.parametrize("shape", [(3072, 16384, 768), (768, 4099, 3072), (1001, 2057, 389)])
@pytest.mark.parametrize("split_k", [2, 8])
def test_wide_split_k_plan_on_the_gpu(shape, split_k):
    """The wide split-K kernel (192x192 tiles, a tuning candidate for deep 16-bit products),
    forced at GPT-2's dW layout (A = dZ^T, column-major) and odd sizes: dW against float64,
    NaN-poisoned, with a bias and gelu through the reduce kernel."""
    plan = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3, "SPLIT_K": split_k, "WIDE": 1}
    forced_gelu_launches(plan, *shape, a_column_major=True)


@pytest.mark.parametrize("shape, a_column_major", [((12544, 1152, 128), False),
                                                   ((1001, 2056, 392), False),
                                                   ((3072, 4096, 768), True)])
@pytest.mark.parametrize("tile", [(128, 64, 64, 4, 5, 1), (128, 256, 64, 8, 3, 8)])
def test_tall_tma_plan_on_the_gpu(shape, a_column_major, tile):
    """The tall TMA kernel (192x64 and 192x256 tiles, tuning candidates for 16-bit
    products), forced at ResNet's 12544x1152x128, an odd size (1001 rows end inside a
    tile's second dot) and GPT-2's dW layout (A column-major): against float64,
    NaN-poisoned, bias and gelu."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs compute capability 9.0+")
    bm, bn, bk, w, s, group = tile
    plan = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "num_warps": w,
            "num_stages": s, "TMA": 1, "WIDE_M": 1}
    forced_gelu_launches(plan, *shape, a_column_major=a_column_major)


def test_tuner_times_the_gpu_not_the_host():
    """The tuner's timing (autotune.graph_median_ms) replays a CUDA graph: 2 ms of Python per
    call do not count, where timing call by call (call_median_ms) measures the host."""
    import time
    from kernels import autotune
    x = torch.randn(64, 64, device="cuda")

    def slow_host():
        time.sleep(0.002)
        x.mul_(1.0)
    assert autotune.call_median_ms(slow_host) > 1.5
    assert autotune.graph_median_ms(slow_host) < 0.2


def test_linear_backward_through_a_tma_plan_in_a_fresh_process():
    """A fresh process whose first CUDA work in autograd's backward thread is a TMA plan's
    product (as with a warm autotune cache): it needs kernels.matmul.tma.bind_context,
    without which the descriptor fill fails with "invalid device context"."""
    script = """
import importlib
import torch, kernels
launcher = importlib.import_module("kernels.matmul.launcher")
if torch.cuda.get_device_capability()[0] < 9:
    print("SKIP"); raise SystemExit
tma = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
       "num_stages": 4, "TMA": 1}
plain = {k: v for k, v in tma.items() if k != "TMA"}
launcher.candidate_plans = lambda M, N, K, dtype, device, layout=None: \
    [tma if layout == "rr" else plain]   # TMA reads row-major operands: dX's and y's
kernels.set_backend("triton")
x = torch.randn(2048, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = (torch.randn(2304, 768, device="cuda") / 28).to(torch.bfloat16).requires_grad_()
y = kernels.linear(x, w)
y.backward(torch.ones_like(y))
ref = torch.ones(2048, 2304, device="cuda", dtype=torch.float64) @ w.double()
err = ((x.grad.double() - ref).norm() / ref.norm()).item()
print("ERR", err)
"""
    env = {**os.environ, "KERNELS_TMA": "1", "KERNELS_AUTOTUNE": "0"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    if "SKIP" in out.stdout:
        pytest.skip("TMA needs compute capability 9.0+")
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.split("ERR")[1]) < 1e-2


@pytest.mark.parametrize("case", verify.cases("attention", "short"), ids=lambda c: c.label())
def test_attention_shorter_than_a_tile_on_the_gpu(case):
    """Issue 20: the backward returned garbage (relative error ~1e24 in fp32) for sequences
    shorter than one tile on the GPU. Every short T and head dim, each dtype, causal or not,
    forward and all three gradients against float64."""
    kernels.set_backend("triton")
    results = verify.run_case(case, importlib.import_module("kernels.attention").triton_attention,
                              "cuda", seed=5)
    assert all(r.ok for r in results), verify.format_failures(results)


@pytest.mark.parametrize("n, k, sparsity", [(3072, 768, 0.9), (768, 3072, 0.75), (1001, 389, 0.5)])
def test_block_sparse_layer_step_on_the_gpu(n, k, sparsity):
    """A synced 64x64-block-pruned kernels.Linear in bf16 at GPT-2's MLP shapes (and an odd
    one), 4096 tokens: forward, dX and the block-sampled dW (the tuned plan) against float64,
    with dW exactly zero on the pruned blocks."""
    kernels.set_backend("triton")
    g = torch.Generator().manual_seed(n)
    w = ref.prune_blocks(torch.randn(n, k, generator=g) * k ** -0.5, 64, sparsity, generator=g)
    layer = kernels.Linear(k, n).cuda()
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.sparse_block_size = 64
    kernels.sync_block_layouts(layer, sampled_dw=True)
    assert layer.block_active
    x = torch.randn(4096, k, generator=g).cuda().requires_grad_()
    dy = torch.randn(4096, n, generator=g).cuda()
    with torch.autocast("cuda", torch.bfloat16):
        y = layer(x)
    y.backward(dy.to(y.dtype))
    wd, xd, dyd = layer.weight.double(), x.detach().double(), dy.double()
    keep = w.cuda() != 0
    assert ref.rel_err(y, xd @ wd.t() + layer.bias.double()) < 1e-2
    assert ref.rel_err(x.grad, dyd @ wd) < 1e-2
    assert ref.rel_err(layer.weight.grad, (dyd.t() @ xd) * keep) < 1e-2
    assert (layer.weight.grad[~keep] == 0).all()
