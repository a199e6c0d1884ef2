"""kernels/experimental/stream_k.py: the stream-K plans stay runnable (forced through
kernels.matmul.launch in the interpreter, against float64) and stay out of every default
plan list."""
import importlib

import pytest
import torch

import kernels
from kernels import reference as ref
from kernels import verify


def launcher():
    return importlib.import_module("kernels.matmul.launcher")


def stream_k():
    return importlib.import_module("kernels.experimental.stream_k")


# (M, K, N) with 16x16x16 tiles on the interpreter's 4 "SMs" (4 or 12 programs): 37x75x29
# cuts tiles between programs, with a shifted last row tile; 16x160x16 is one tile of 10 K
# blocks, so its head adds up to 9 tails; 5x20x33 has 6 K blocks in all, fewer than 12
# programs (the launcher caps them: an empty program would leave a head waiting); 40x300x50
# ends K in a partial block.
SHAPES = [(37, 75, 29), (16, 160, 16), (5, 20, 33), (40, 300, 50)]
RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def stream_k_plan(per_sm):
    return {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4,
            "num_stages": 2, "STREAM_K": per_sm}


def inputs(shape, dtype, device, seed=5):
    m, k, n = shape
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g).to(device, dtype)
    b = (torch.randn(k, n, generator=g) / k ** 0.5).to(device, dtype)
    bias = torch.randn(n, generator=g).to(device, dtype)
    return a, b, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("per_sm", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_stream_k_plan_matches_reference(shape, per_sm, dtype, triton_device):
    """A forced stream-K plan: C and the pre-activation Z against float64, outputs
    NaN-poisoned so an element no program stored fails."""
    a, b, bias = inputs(shape, dtype, triton_device)
    with kernels.poisoned():
        c, z = launcher().launch(a, b, bias, "gelu", store_preact=True,
                                 config=stream_k_plan(per_sm))
    pre = ref.matmul(a.double(), b.double(), bias.double())
    rtol = RTOL[dtype]
    torch.testing.assert_close(z.double(), pre, rtol=rtol, atol=rtol)
    torch.testing.assert_close(c.double(), ref.activate(pre, "gelu"), rtol=rtol, atol=rtol)


def test_stream_k_is_bit_reproducible_and_trains_a_linear(triton_device, monkeypatch):
    """Heads add their tails in unit order: identical bits call after call (the first call
    and two from the launch cache); and a Linear's forward, dX and dW (tokens as K) through
    stream-K against float64 autograd."""
    monkeypatch.setattr(launcher(), "candidate_plans", lambda *args: [stream_k_plan(2)])
    monkeypatch.setattr(launcher(), "_LAUNCHES", {})
    a, b, bias = inputs((16, 160, 16), torch.bfloat16, triton_device)
    runs = [launcher().launch(a, b, bias)[0] for _ in range(3)]
    assert len(launcher()._LAUNCHES) == 1
    assert all(torch.equal(c, runs[0]) for c in runs[1:])
    case = verify.Case("linear", (37, 75, 29), torch.float32, bias=True)
    mm = importlib.import_module("kernels.matmul")
    results = verify.run_case(case, mm.triton_linear, triton_device, seed=3)
    assert [r.stage for r in results] == ["forward", "grad:a", "grad:b", "grad:bias"]
    assert all(r.ok for r in results), verify.format_failures(results)


def test_stream_k_is_in_no_default_grid_and_offered_where_waves_are_part_empty(monkeypatch):
    """On a 132-SM GPU the default grid has no stream-K plan, whatever the environment says
    (KERNELS_STREAM_K is gone); stream_k.plans offers GPT-2's dW of a [3072, 768] weight
    (144 tiles of 128x128: two waves, the second 12 tiles) plans that each fill < 90% of
    their waves, and its forward 16384x768x2304 (2304 tiles, 97% fill) none."""
    mm = importlib.import_module("kernels.matmul")
    dw = (3072, 768, 16384)   # M, N, K
    monkeypatch.setenv("KERNELS_STREAM_K", "1")
    for shape in (dw, (16384, 2304, 768), (256, 1000, 2048)):
        for dtype in (torch.bfloat16, torch.float32):
            plans = mm.gpu_plans(*shape, dtype, sms=132, layout="rr")
            assert not [p for p in plans if "STREAM_K" in p]
    offered = stream_k().plans(*dw, torch.bfloat16, sms=132)
    tiles = lambda p: -(-3072 // p["BLOCK_M"]) * -(-768 // p["BLOCK_N"])
    assert offered and all(stream_k().wave_fill(tiles(p), 132) < 0.9 for p in offered)
    assert {(p["BLOCK_M"], p["BLOCK_N"]) for p in offered} >= {(128, 128), (128, 256)}
    assert stream_k().plans(16384, 2304, 768, torch.bfloat16, sms=132) == []
    assert stream_k().wave_fill(144, 132) == pytest.approx(144 / 264)
