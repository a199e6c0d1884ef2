"""kernels.matmul / kernels.linear: the Triton kernel (interpreter on CPU) and the cpu path
against the float64 reference, forward and gradients, over the small grid."""
import importlib

import pytest
import torch

import kernels
from kernels import reference as ref
from kernels import verify


CASES = verify.cases("matmul", "small") + verify.cases("linear", "small")


def mm():
    return importlib.import_module("kernels.matmul")


def launcher():
    return importlib.import_module("kernels.matmul.launcher")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label())
def test_triton_matches_reference(case, triton_device):
    impl = mm().triton_matmul if case.op == "matmul" else mm().triton_linear
    results = verify.run_case(case, impl, triton_device, seed=1)
    assert all(r.ok for r in results), verify.format_failures(results)


@pytest.mark.parametrize("case", [c for c in CASES if c.dtype != torch.float16],
                         ids=lambda c: c.label())
def test_cpu_path_matches_reference(case):
    impl = mm().cpu_matmul if case.op == "matmul" else mm().cpu_linear
    results = verify.run_case(case, impl, "cpu", seed=2)
    assert all(r.ok for r in results), verify.format_failures(results)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_odd_shape_assert_close(dtype, rtol, triton_device):
    """5x123x123, the house example of an odd shape, elementwise against float64."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 123, generator=g).to(triton_device, dtype)
    b = (torch.randn(123, 123, generator=g) / 11).to(triton_device, dtype)
    bias = torch.randn(123, generator=g).to(triton_device, dtype)
    kernels.set_backend("triton")
    out = kernels.matmul(a, b, bias, activation="gelu")
    expected = ref.matmul(a.double(), b.double(), bias.double(), "gelu")
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=rtol)


def test_strided_views_need_no_copy(triton_device):
    """a transposed view (column-major) gives the same answer as its contiguous copy."""
    kernels.set_backend("triton")
    a = torch.randn(40, 30, device=triton_device).t()      # [30, 40], column-major
    b = torch.randn(24, 40, device=triton_device).t()      # [40, 24], column-major
    torch.testing.assert_close(kernels.matmul(a, b), a.contiguous() @ b.contiguous(),
                               rtol=1e-5, atol=1e-5)


def test_linear_weight_grad_is_parameter_shaped(triton_device):
    kernels.set_backend("triton")
    x = torch.randn(7, 33, device=triton_device, requires_grad=True)
    w = torch.randn(19, 33, device=triton_device, requires_grad=True)
    kernels.linear(x, w).sum().backward()
    assert w.grad.shape == w.shape and w.grad.is_contiguous()


def test_shape_and_dtype_errors_name_the_problem(triton_device):
    kernels.set_backend("triton")
    with pytest.raises(ValueError, match=r"a \(4, 5\) @ b \(6, 7\)"):
        kernels.matmul(torch.randn(4, 5, device=triton_device),
                       torch.randn(6, 7, device=triton_device))
    with pytest.raises(TypeError, match="bfloat16"):
        mm().launch(torch.randn(4, 5, device=triton_device),
                    torch.randn(5, 6, device=triton_device, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="activation"):
        kernels.matmul(torch.randn(4, 5), torch.randn(5, 6), activation="tanh")


def test_autocast_casts_inputs_like_f_linear(triton_device):
    kernels.set_backend("triton")
    x = torch.randn(9, 32, device=triton_device)
    w = torch.randn(16, 32, device=triton_device)
    with torch.autocast(triton_device, dtype=torch.bfloat16):
        y = kernels.linear(x, w)
        expected = torch.nn.functional.linear(x, w)
    assert y.dtype == expected.dtype == torch.bfloat16
    assert ref.rel_err(y, x.double() @ w.double().t()) < 1e-2


@pytest.mark.parametrize("shape", [(5, 123, 123), (70, 33, 65), (64, 64, 64)])
def test_persistent_plan_matches_reference(shape, triton_device):
    """The persistent kernel (a tuning candidate on GPUs), forced by an explicit plan."""
    m, k, n = shape
    plan = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4,
            "num_stages": 2, "PERSISTENT": 1}
    g = torch.Generator().manual_seed(9)
    a = torch.randn(m, k, generator=g).to(triton_device)
    b = (torch.randn(k, n, generator=g) / k ** 0.5).to(triton_device)
    bias = torch.randn(n, generator=g).to(triton_device)
    with kernels.poisoned():
        c, z = mm().launch(a, b, bias, "gelu", store_preact=True, config=plan)
    pre = a.double() @ b.double() + bias.double()
    assert ref.rel_err(z, pre) < 1e-5
    assert ref.rel_err(c, ref.activate(pre, "gelu")) < 1e-5


# --- split-K ------------------------------------------------------------------------------
# (M, K, N): odd sizes; K = 75 ends in a partial block of 16 (5 blocks: splits of 2+3 and
# 1+1+1+2); K = 20 has 2 blocks, so S = 4 leaves two splits empty (S * BLOCK_K > K); K = 96
# divides by 16 (EVEN_K) and N = 48 ends mid-tile.
SPLIT_K_SHAPES = [(37, 75, 29), (5, 20, 33), (64, 96, 48)]
EPILOGUES = [(False, None), (True, "relu"), (True, "gelu")]   # (bias, activation)
SPLIT_K_RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def split_k_plan(split_k):
    return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4,
            "num_stages": 2, "SPLIT_K": split_k}


def split_k_inputs(shape, dtype, device, seed=5):
    """Random a [M, K], b [K, N] (scaled by K^-1/2) and bias [N] for the matmul tests."""
    m, k, n = shape
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g).to(device, dtype)
    b = (torch.randn(k, n, generator=g) / k ** 0.5).to(device, dtype)
    bias = torch.randn(n, generator=g).to(device, dtype)
    return a, b, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias_on, activation", EPILOGUES)
@pytest.mark.parametrize("split_k", [2, 4])
@pytest.mark.parametrize("shape", SPLIT_K_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_split_k_plan_matches_reference(shape, split_k, bias_on, activation, dtype,
                                        triton_device):
    """A forced split-K plan: C and (for gelu) the pre-activation Z against float64; outputs
    NaN-poisoned, so an element no split wrote fails."""
    check_forced_plan(split_k_plan(split_k), shape, bias_on, activation, dtype, triton_device,
                      SPLIT_K_RTOL[dtype])


def check_forced_plan(plan, shape, bias_on, activation, dtype, device, rtol, seed=5):
    """launch() with a forced plan on NaN-poisoned outputs: C and (for gelu) the
    pre-activation Z against float64; Z is not returned without gelu."""
    a, b, bias = split_k_inputs(shape, dtype, device, seed)
    bias = bias if bias_on else None
    preact = activation == "gelu"
    with kernels.poisoned():
        c, z = mm().launch(a, b, bias, activation, store_preact=preact, config=plan)
    pre = ref.matmul(a.double(), b.double(), None if bias is None else bias.double())
    torch.testing.assert_close(c.double(), ref.activate(pre, activation), rtol=rtol, atol=rtol)
    if preact:
        torch.testing.assert_close(z.double(), pre, rtol=rtol, atol=rtol)
    else:
        assert z is None


def test_split_k_is_bit_reproducible_through_the_launch_cache(triton_device, monkeypatch):
    """The ordered reduction gives identical bits on every call: the first call (plan pick,
    validation, compile) and two from the launch cache, whose entry launches both kernels."""
    plan = split_k_plan(4)
    monkeypatch.setattr(launcher(), "candidate_plans", lambda *args: [plan])
    monkeypatch.setattr(launcher(), "_LAUNCHES", {})
    split_k = importlib.import_module("kernels.matmul.split_k")
    reduces = []
    real_reduce = split_k._split_k_reduce_kernel

    class CountingReduce:   # kernel[grid](...) with a count of the launches
        def __getitem__(self, grid):
            launch = real_reduce[grid]
            return lambda *args, **kw: (reduces.append(grid), launch(*args, **kw))

    monkeypatch.setattr(split_k, "_split_k_reduce_kernel", CountingReduce())
    a, b, bias = split_k_inputs((37, 75, 29), torch.bfloat16, triton_device)
    with kernels.poisoned():
        runs = [mm().launch(a, b, bias, "gelu", store_preact=True) for _ in range(3)]
    assert len(launcher()._LAUNCHES) == 1 and len(reduces) == 3
    for c, z in runs[1:]:
        assert torch.equal(c, runs[0][0]) and torch.equal(z, runs[0][1])
    pre = a.double() @ b.double() + bias.double()
    assert ref.rel_err(runs[0][0], ref.activate(pre, "gelu")) < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_split_k_forward_and_gradients_of_linear(dtype, triton_device, monkeypatch):
    """Every product of a Linear's forward and backward (dX, and dW with the tokens as K)
    through a split-K plan, against float64 autograd, gradients NaN-poisoned."""
    monkeypatch.setattr(launcher(), "candidate_plans", lambda *args: [split_k_plan(2)])
    monkeypatch.setattr(launcher(), "_LAUNCHES", {})
    case = verify.Case("linear", (37, 75, 29), dtype, bias=True)
    results = verify.run_case(case, mm().triton_linear, triton_device, seed=3)
    assert [r.stage for r in results] == ["forward", "grad:a", "grad:b", "grad:bias"]
    assert all(r.ok for r in results), verify.format_failures(results)


# --- wide split-K (WIDE=1: tiles of 3/2 BLOCK_M x 3/2 BLOCK_N as four dots) ---------------
# (M, K, N) with 32x32 plans, so 48x48 tiles: rows/cols past a tile's first 32 come from the
# second dots. 100 x 70: a shifted last tile both ways (100 = 2 * 48 + 4); K = 75 ends in a
# partial block; 20 x 33: smaller than one tile (rows and cols wrap, the store masks them);
# 150 x 49: M between tiles, N one past a tile; K = 96 divides by 16 (EVEN_K).
WIDE_SHAPES = [(100, 75, 70), (20, 40, 33), (150, 96, 49)]


def wide_plan(split_k):
    return dict(split_k_plan(split_k), BLOCK_N=32, BLOCK_M=32, WIDE=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias_on, activation", [(False, None), (True, "gelu")])
@pytest.mark.parametrize("split_k", [2, 4])
@pytest.mark.parametrize("shape", WIDE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_wide_split_k_plan_matches_reference(shape, split_k, bias_on, activation, dtype,
                                             triton_device):
    """A forced wide split-K plan: C and Z against float64 on NaN-poisoned outputs (and
    workspace), so an element none of the four dots wrote fails."""
    check_forced_plan(wide_plan(split_k), shape, bias_on, activation, dtype, triton_device,
                      SPLIT_K_RTOL[dtype])


def test_wide_split_k_trains_a_linear_and_is_bit_reproducible(triton_device, monkeypatch):
    """Every product of a Linear's forward and backward through a wide plan (dW's A is
    column-major: dZ^T), against float64 autograd; a second call gives the same bits."""
    monkeypatch.setattr(launcher(), "candidate_plans", lambda *args: [wide_plan(2)])
    monkeypatch.setattr(launcher(), "_LAUNCHES", {})
    case = verify.Case("linear", (100, 75, 70), torch.bfloat16, bias=True)
    results = verify.run_case(case, mm().triton_linear, triton_device, seed=3)
    assert [r.stage for r in results] == ["forward", "grad:a", "grad:b", "grad:bias"]
    assert all(r.ok for r in results), verify.format_failures(results)
    a, b, bias = split_k_inputs((100, 75, 70), torch.bfloat16, triton_device)
    first, _ = mm().launch(a.t().contiguous().t(), b, bias)
    again, _ = mm().launch(a.t().contiguous().t(), b, bias)
    assert torch.equal(first, again)


@pytest.mark.parametrize("knobs, why", [
    (dict(WIDE=1), "needs SPLIT_K >= 2"),
    (dict(WIDE=1, SPLIT_K=2, TMA=1), "none of PERSISTENT, TMA, STREAM_K"),
    (dict(WIDE=1, SPLIT_K=2, PERSISTENT=1), "PERSISTENT"),
    (dict(WIDE=2, SPLIT_K=2), "must be 1"),
    (dict(WIDE=1, SPLIT_K=2, BLOCK_M=16), "BLOCK_M and BLOCK_N >= 32"),
])
def test_wide_plans_that_cannot_run_are_refused_by_name(knobs, why, triton_device):
    from kernels._common import KernelPlanError
    plan = {k: v for k, v in split_k_plan(1).items() if k != "SPLIT_K"}
    plan.update(BLOCK_M=32, BLOCK_N=32)
    plan.update(knobs)
    a = torch.randn(64, 64, device=triton_device)
    with pytest.raises(KernelPlanError, match=why) as err:
        mm().launch(a, a, config=plan)
    assert err.value.stage == "validate" and err.value.plan == plan


def test_wide_plans_offered_for_deep_16bit_products_only():
    """On a 132-SM GPU: GPT-2's dW products (K = 16384 tokens) get wide split-K candidates
    (S = 2, 4, 8; shared memory 3/2 of the plain tile's); its forward products, resnet50's
    fc, fp32 and a product narrower than a wide tile do not."""
    wide = lambda m, k, n, dtype=torch.bfloat16: [
        p for p in mm().gpu_plans(m, n, k, dtype, sms=132) if p.get("WIDE")]
    for m, n in [(3072, 768), (768, 3072), (768, 768), (2304, 768)]:
        plans = wide(m, 16384, n)
        assert {p["SPLIT_K"] for p in plans} == {2, 4, 8}
        assert all(mm().tile_shape(p) == (192, 192) for p in plans)
    assert mm().smem_bytes(wide(768, 16384, 768)[0], torch.bfloat16) == 384 * 64 * 2 * 3
    assert not wide(16384, 768, 2304) and not wide(256, 2048, 1000)
    assert not wide(768, 16384, 768, torch.float32) and not wide(768, 16384, 160)


def test_bias_gradient_sums_in_fp32(triton_device):
    """dbias = g.sum(0, dtype=float32), the same values as the fp32 copy g.float().sum(0)."""
    kernels.set_backend("triton")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 40, 24, generator=g).to(triton_device, torch.bfloat16)
    w = torch.randn(17, 24, generator=g).to(triton_device, torch.bfloat16).requires_grad_()
    bias = torch.zeros(17, device=triton_device, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(3, 40, 17, generator=g).to(triton_device, torch.bfloat16)
    kernels.linear(x, w, bias).backward(dy)
    expected = dy.reshape(-1, 17).float().sum(0).to(torch.bfloat16)
    # bitwise on CPU (torch upcasts, then sums); on CUDA torch sums bf16 in fp32 directly,
    # the same values up to summation order
    exact = dict(rtol=0, atol=0) if triton_device == "cpu" else {}
    torch.testing.assert_close(bias.grad, expected, **exact)


def _split_ks(plans):
    return [p for p in plans if p.get("SPLIT_K", 1) > 1]


def test_tuner_offers_split_k_only_where_tiles_leave_sms_idle():
    """On a 132-SM GPU: resnet50 fc (256x2048x1000, M x K x N) and GPT-2's dW of a 768->768
    Linear (768x16384x768) get split-K candidates, each with fewer tiles than SMs and >= 2
    BLOCK_K steps per split; GPT-2's forward 16384x768x2304 (2304 tiles of 128x128) none."""
    for m, k, n in [(256, 2048, 1000), (768, 16384, 768)]:
        for dtype in (torch.bfloat16, torch.float32):
            plans = _split_ks(mm().gpu_plans(m, n, k, dtype, sms=132))
            assert {p["SPLIT_K"] for p in plans} == {2, 4, 8}
            for p in plans:
                assert -(-m // p["BLOCK_M"]) * -(-n // p["BLOCK_N"]) < 132
                assert k // p["SPLIT_K"] >= 2 * p["BLOCK_K"]
                assert "PERSISTENT" not in p
    assert not _split_ks(mm().gpu_plans(16384, 2304, 768, torch.bfloat16, sms=132))
    # short K: 256x128x1000 has 2 K blocks of 64, too few to split
    assert not _split_ks(mm().gpu_plans(256, 1000, 128, torch.bfloat16, sms=132))
    # the first candidate (the plan used with tuning off) is never split
    assert "SPLIT_K" not in mm().gpu_plans(256, 1000, 2048, torch.bfloat16, sms=132)[0]
    # the interpreter keeps its one small plan
    assert not _split_ks(mm().candidate_plans(256, 1000, 2048, torch.bfloat16,
                                              torch.device("cpu")))


def test_deep_pipeline_plans_only_for_few_tile_products():
    """resnet50's fc and 7x7x512 (fewer 128x128 tiles than 132 SMs) get the 64x64 plans with
    5-8 stages; GPT-2's 16384x768x2304 forward does not; fp32 never (FMA plans)."""
    deep = lambda *shape, dtype=torch.bfloat16: [
        p for p in mm().gpu_plans(*shape, dtype, sms=132) if p["num_stages"] >= 5]
    for m, n, k in [(256, 1000, 2048), (784, 512, 4608)]:
        assert {(p["BLOCK_K"], p["num_stages"]) for p in deep(m, n, k)} >= {(128, 5), (64, 8)}
    assert deep(16384, 2304, 768) == []
    assert deep(256, 1000, 2048, dtype=torch.float32) == []


# --- divisibility hints (launcher._divisibility, tiled._aligned) --------------------------
def test_divisibility_names_the_largest_power_of_two_up_to_16():
    """DIV is what every value the loads step along contiguous memory by shares: resnet50's
    fc as a Linear (N = 1000, B's row stride 1000) gets 8; all multiples of 16 get 16; an odd
    N gets 1; a column-major A brings M (and its column stride) in."""
    div = launcher()._divisibility
    x = torch.empty(256, 2048)
    assert div(x, torch.empty(2048, 1000), "r", "r", 256, 1000) == 8
    assert div(x, torch.empty(2048, 1024), "r", "r", 256, 1024) == 16
    assert div(x, torch.empty(2048, 1001), "r", "r", 256, 1001) == 1
    a_t = torch.empty(2048, 1004).t()           # [1004, 2048] column-major: M = 1004
    assert div(a_t, torch.empty(2048, 1024), "c", "r", 1004, 1024) == 4
    b_t = torch.empty(1000, 2040).t()           # [2040, 1000] column-major: stride 2040
    assert div(x[:, :2040], b_t, "r", "c", 256, 1000) == 8
    b_0 = torch.empty(2048, 1).expand(2048, 48)     # strides (1, 0): "column-major"
    assert div(x, b_0, "r", "c", 256, 48) == 16     # a zero stride divides by anything


# (M, K, N) and operand layouts whose DIV is 2, 4 or 8: the kernels then rewrite N, M and
# the strides as known multiples; a wrong DIV (or a rewrite of the wrong value) shows here
DIV_CASES = [((37, 40, 24), "rr", 8), ((20, 36, 12), "cr", 4), ((18, 30, 10), "rc", 2),
             ((24, 20, 40), "cc", 4)]


def _operand(rows, cols, layout, dtype, device, g):
    t = torch.randn(rows, cols, generator=g) if layout == "r" else \
        torch.randn(cols, rows, generator=g).t()
    return (t / cols ** 0.5).to(device, dtype)


@pytest.mark.parametrize("plan_kind", ["plain", "persistent", "split_k", "stream_k"])
@pytest.mark.parametrize("shape, layout, expected_div", DIV_CASES, ids=lambda v: str(v))
def test_kernels_with_divisibility_hints_match_reference(shape, layout, expected_div,
                                                         plan_kind, triton_device):
    m, k, n = shape
    g = torch.Generator().manual_seed(11)
    a = _operand(m, k, layout[0], torch.float32, triton_device, g)
    b = _operand(k, n, layout[1], torch.float32, triton_device, g)
    bias = torch.randn(n, generator=g).to(triton_device)
    assert launcher()._divisibility(a, b, layout[0], layout[1], m, n) == expected_div
    plan = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4,
            "num_stages": 2, **{"plain": {}, "persistent": {"PERSISTENT": 1},
                                "split_k": {"SPLIT_K": 2},
                                "stream_k": {"STREAM_K": 1}}[plan_kind]}
    with kernels.poisoned():
        c, z = mm().launch(a, b, bias, "gelu", store_preact=True, config=plan)
    pre = a.double() @ b.double() + bias.double()
    torch.testing.assert_close(z.double(), pre, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.double(), ref.activate(pre, "gelu"), rtol=1e-5, atol=1e-5)
