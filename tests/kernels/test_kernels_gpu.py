"""GPU-only checks (skipped without CUDA): tuning and its cache on a real device, 2:4 sparse
tensor cores, bf16 training step through kernels.Linear and attention."""
import importlib

import pytest
import torch

import kernels
from kernels import autotune
from kernels import reference as ref

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
    sp = importlib.import_module("kernels.sparse")
    w = ref.prune_2_4(torch.randn(256, 512, device="cuda", dtype=torch.float16))
    ok, why = sp.semi_structured_support(w)
    if not ok:
        pytest.skip(why)
    x = torch.randn(128, 512, device="cuda", dtype=torch.float16, requires_grad=True)
    y = sp.semi_structured_linear(x, w)
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


@pytest.mark.parametrize("shape", [(127, 129, 131), (2048, 768, 2304), (4096, 3072, 768)])
def test_persistent_matmul_plan_on_the_gpu(shape):
    """The persistent kernel (a tuning candidate with KERNELS_PERSISTENT=1), forced."""
    mm = importlib.import_module("kernels.matmul")
    m, k, n = shape
    plan = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3, "PERSISTENT": 1}
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = (torch.randn(k, n, device="cuda") / k ** 0.5).to(torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    with kernels.poisoned():
        c, z = mm.launch(a, b, bias, "gelu", store_preact=True, config=plan)
    pre = a.double() @ b.double() + bias.double()
    assert ref.rel_err(z, pre) < 1e-2
    assert ref.rel_err(c, ref.activate(pre, "gelu")) < 1e-2


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
