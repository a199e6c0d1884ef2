"""The TMA matmul plans (kernels/matmul/tma.py, plan knob TMA=1): forced plans against the
float64 reference in the interpreter (descriptor loads zero-fill and stores clip at the
edges), the launch cache's per-call descriptors and fallback, and which problems the tuner
offers TMA plans (unless KERNELS_TMA=0, operands with 16-byte aligned rows, row- or
column-major)."""
import importlib

import pytest
import torch

import kernels
from kernels import reference as ref
from kernels._common import KernelPlanError
from test_matmul import check_forced_plan, split_k_inputs


def mm():
    return importlib.import_module("kernels.matmul")


def tma():
    return importlib.import_module("kernels.matmul.tma")


def sub(name):
    """A module of the kernels.matmul package (launcher, plans, weights, autograd)."""
    return importlib.import_module(f"kernels.matmul.{name}")


@pytest.fixture
def tma_device(triton_device):
    """triton_device, skipped where the TMA kernel cannot run (the reason names the
    version): no triton.tools.tensor_descriptor, or a GPU older than Hopper."""
    from kernels import _triton
    if not tma().HAS_TMA:
        pytest.skip(f"triton {_triton.VERSION} has no triton.tools.tensor_descriptor")
    if triton_device == "cuda" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs compute capability >= 9.0")
    return triton_device


def spy_launches(monkeypatch, kernel_name):
    """The grids of every launch of tma.py's `kernel_name`, recorded as it runs."""
    grids = []
    real = getattr(tma(), kernel_name)

    class Counting:
        def __getitem__(self, grid):
            launch = real[grid]
            return lambda *args, **kw: (grids.append(grid), launch(*args, **kw))

    monkeypatch.setattr(tma(), kernel_name, Counting())
    return grids


@pytest.fixture
def tma_launches(monkeypatch):
    """The grids of every launch of the TMA kernel (a spy: a forced plan that silently ran
    another kernel would pass the numeric checks without testing TMA)."""
    return spy_launches(monkeypatch, "_matmul_tma_kernel")


def tma_plan(**extra):
    return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4,
            "num_stages": 2, "TMA": 1, **extra}


def inputs(shape, dtype, device, seed=7):
    return split_k_inputs(shape, dtype, device, seed)


RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
# (M, K, N) with 16x32x16 tiles: 37 and 40 end mid-tile; K = 72 and 24 are multiples of 8
# (TMA's alignment for 16-bit) but not of BLOCK_K = 16, so the last K block is read past
# the edge (zero-filled); 64x64x64 divides evenly. 37x72x40 has 3x2 = 6 tiles on the
# interpreter's 4 "SMs", so programs 0 and 1 run two tiles each.
SHAPES = [(37, 72, 40), (5, 24, 16), (64, 64, 64)]
EPILOGUES = [(False, None), (True, None), (True, "relu"), (False, "gelu"), (True, "gelu")]


# --- numerics ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias_on, activation", EPILOGUES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tma_plan_matches_reference(shape, bias_on, activation, dtype, tma_device,
                                    tma_launches):
    """A forced TMA plan: C and (gelu) the pre-activation Z against float64, outputs
    NaN-poisoned so an element the clipped stores missed fails."""
    check_forced_plan(tma_plan(), shape, bias_on, activation, dtype, tma_device, RTOL[dtype],
                      seed=7)
    assert len(tma_launches) == 1


def column_major(t):
    return t.t().contiguous().t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["cr", "rc", "cc"])
def test_tma_plan_reads_column_major_operands(layout, dtype, tma_device, tma_launches):
    """A column-major A (the backward's dB = A^T @ dZ) or B (a Linear weight as is) is read
    through a descriptor of its transpose: 40x72x24 with 16x32x16 tiles ends mid-tile in M
    and N and mid-block in K (zero-filled), outputs NaN-poisoned, against float64."""
    a, b, bias = inputs((40, 72, 24), dtype, tma_device)
    a = column_major(a) if layout[0] == "c" else a
    b = column_major(b) if layout[1] == "c" else b
    assert sub("launcher")._layout(a)[1] + sub("launcher")._layout(b)[1] == layout
    with kernels.poisoned():
        c, z = mm().launch(a, b, bias, "gelu", store_preact=True, config=tma_plan())
    assert len(tma_launches) == 1
    pre = a.double() @ b.double() + bias.double()
    torch.testing.assert_close(z.double(), pre, rtol=RTOL[dtype], atol=RTOL[dtype])
    torch.testing.assert_close(c.double(), ref.activate(pre, "gelu"), rtol=RTOL[dtype],
                               atol=RTOL[dtype])


def test_launch_cache_builds_descriptors_per_call(tma_device, tma_launches, monkeypatch):
    """Through the launch cache (a TMA plan picked, then two cached calls): each call reads
    its own tensors (descriptors hold data pointers: a stale one would reuse old data)."""
    monkeypatch.setattr(sub("launcher"), "candidate_plans", lambda *args: [tma_plan()])
    monkeypatch.setattr(sub("launcher"), "_LAUNCHES", {})
    for seed in (1, 2, 3):
        a, b, bias = inputs((37, 72, 40), torch.float32, tma_device, seed=seed)
        with kernels.poisoned():
            c, z = mm().launch(a, b, bias, "gelu", store_preact=True)
        pre = a.double() @ b.double() + bias.double()
        torch.testing.assert_close(c.double(), ref.activate(pre, "gelu"), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z.double(), pre, rtol=1e-5, atol=1e-5)
    assert len(sub("launcher")._LAUNCHES) == 1 and len(tma_launches) == 3


@pytest.mark.parametrize("view", ["row stride 73", "base offset 4 bytes",
                                  "column-major B, column stride 73"])
def test_misaligned_view_runs_the_plain_kernel(view, tma_device, tma_launches):
    """A view whose shape passes the plan check but whose memory breaks TMA's 16-byte rule
    (for a column-major operand: its transpose's) runs the tiled kernel with the same
    tiles, correctly."""
    g = torch.Generator().manual_seed(3)
    wide = torch.randn(37, 73, generator=g).to(tma_device)
    a = wide[:, 1:] if view == "base offset 4 bytes" else wide[:, :72]   # K = 72
    b = (torch.randn(72, 40, generator=g) / 8).to(tma_device)
    if view.startswith("column-major"):
        a = a.contiguous()
        b = (torch.randn(40, 73, generator=g) / 8).to(tma_device)[:, :72].t()
        assert sub("launcher")._layout(b)[1] == "c" and b.stride(1) == 73
    with kernels.poisoned():
        c, _ = mm().launch(a, b, config=tma_plan())
    assert tma_launches == []
    torch.testing.assert_close(c.double(), a.double() @ b.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (sm_90+)")
@pytest.mark.parametrize("shape", [(127, 136, 264), (2048, 768, 2304)])
def test_tma_hopper_tile_on_the_gpu(shape, tma_device, tma_launches):
    """A tuning-sized TMA plan (128x128x64, 8 warps, 4 stages) compiled and run on the GPU."""
    plan = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 4, "TMA": 1}
    a, b, bias = inputs(shape, torch.bfloat16, tma_device)
    with kernels.poisoned():
        c, z = mm().launch(a, b, bias, "gelu", store_preact=True, config=plan)
    assert len(tma_launches) == 1
    pre = a.double() @ b.double() + bias.double()
    assert ref.rel_err(z, pre) < 1e-2
    assert ref.rel_err(c, ref.activate(pre, "gelu")) < 1e-2


# --- plan selection and validation ---------------------------------------------------------
def _tmas(plans):
    return [p for p in plans if p.get("TMA")]


GPT2 = (16384, 2304, 768)   # M, N, K of GPT-2's qkv projection (2304 tiles of 128x128)


@pytest.mark.parametrize("off", ["0", "off"])
def test_tma_plans_on_unless_switched_off(off, monkeypatch):
    """KERNELS_TMA unset (the default) or 1: TMA plans are added after the others (never the
    first, untuned default); 0 / off: the grid has none and is otherwise the same."""
    m, n, k = GPT2
    monkeypatch.delenv("KERNELS_TMA", raising=False)
    default = mm().gpu_plans(m, n, k, torch.bfloat16, sms=132, layout="rr")
    monkeypatch.setenv("KERNELS_TMA", "1")
    assert mm().gpu_plans(m, n, k, torch.bfloat16, sms=132, layout="rr") == default
    monkeypatch.setenv("KERNELS_TMA", off)
    without = mm().gpu_plans(m, n, k, torch.bfloat16, sms=132, layout="rr")
    assert not _tmas(without)
    assert [p for p in default if not p.get("TMA")] == without
    assert len(_tmas(default)) >= 2 and not default[0].get("TMA")
    for p in _tmas(default):
        assert "SPLIT_K" not in p and "PERSISTENT" not in p
        assert max(p["BLOCK_M"], p["BLOCK_N"], p["BLOCK_K"]) <= 256
        mm().check_plan(p, (m, n, k), torch.bfloat16, None, "rr")
    monkeypatch.delenv("KERNELS_TMA")
    assert _tmas(mm().gpu_plans(m, n, k, torch.float32, sms=132, layout="rr"))


@pytest.mark.parametrize("layout", ["rc", "cr", "cc"])
def test_tma_plans_offered_for_column_major_operands(layout, monkeypatch):
    """GPT-2's dW of its qkv weight (dZ^T @ X: A column-major, 2304x16384x768) and a Linear
    weight read as is (B column-major) get TMA plans, checked against their layout."""
    monkeypatch.setenv("KERNELS_TMA", "1")
    plans = _tmas(mm().gpu_plans(2304, 768, 16384, torch.bfloat16, sms=132, layout=layout))
    assert plans
    for p in plans:
        mm().check_plan(p, (2304, 768, 16384), torch.bfloat16, None, layout)


@pytest.mark.parametrize("dtype, m, n, k, layout, why", [
    (torch.bfloat16, *GPT2, None, "layout unknown"),
    (torch.bfloat16, 16380, 2304, 768, "cr", "a column-major A's M not a multiple of 8"),
    (torch.bfloat16, 16384, 2304, 770, "rc", "a column-major B's K not a multiple of 8"),
    (torch.bfloat16, 16384, 2300, 768, "cr", "C's N not a multiple of 8"),
    (torch.bfloat16, 16384, 2304, 770, "rr", "K not a multiple of 8"),
    (torch.bfloat16, 16384, 2300, 768, "rr", "N not a multiple of 8"),
    (torch.float32, 16384, 2302, 768, "rr", "N not a multiple of 4 (fp32)"),
])
def test_tma_plans_not_offered(dtype, m, n, k, layout, why, monkeypatch):
    monkeypatch.setenv("KERNELS_TMA", "1")
    assert not _tmas(mm().gpu_plans(m, n, k, dtype, sms=132, layout=layout)), why


def test_few_tile_products_get_the_small_tma_tiles(monkeypatch):
    """resnet50's fc (256x2048x1000: 16 tiles of 128x128 on 132 SMs) gets the few-tile TMA
    table (64x64 up, one program per tile; 64x128x128 among them), GPT-2's 16384x768x2304
    only the full-wave one (128x128 up)."""
    monkeypatch.setenv("KERNELS_TMA", "1")
    knobs = lambda p: (p["BLOCK_M"], p["BLOCK_N"], p["BLOCK_K"], p["num_warps"],
                       p["num_stages"])
    square = lambda plans: [p for p in _tmas(plans) if not p.get("WIDE_M")]
    small = square(mm().gpu_plans(256, 1000, 2048, torch.bfloat16, sms=132, layout="rr"))
    assert small and {knobs(p) for p in small} <= set(sub("plans")._TMA_SMALL_TILES_16BIT)
    assert (64, 128, 128, 4, 4) in {knobs(p) for p in small}
    large = square(mm().gpu_plans(*GPT2, torch.bfloat16, sms=132, layout="rr"))
    assert large and {knobs(p) for p in large} <= set(sub("plans")._TMA_TILES_16BIT)
    assert min(p["BLOCK_M"] * p["BLOCK_N"] for p in large) >= 128 * 128


def test_tma_alignment_is_per_element_size(monkeypatch):
    """N = 2300: rows of 9200 bytes in fp32 (16 x 575, aligned), 4600 in bf16 (not)."""
    monkeypatch.setenv("KERNELS_TMA", "1")
    assert _tmas(mm().gpu_plans(16384, 2300, 768, torch.float32, sms=132, layout="rr"))
    assert not _tmas(mm().gpu_plans(16384, 2300, 768, torch.bfloat16, sms=132, layout="rr"))


def test_interpreter_grid_has_no_tma_plan(monkeypatch):
    """The interpreter keeps its one small plan; tests force TMA through config."""
    monkeypatch.setenv("KERNELS_TMA", "1")
    assert not _tmas(mm().candidate_plans(*GPT2, torch.bfloat16, torch.device("cpu"), "rr"))


@pytest.mark.parametrize("extra, match", [
    ({"SPLIT_K": 2}, r"TMA=1: with SPLIT_K>1"),
    ({"PERSISTENT": 1}, r"TMA=1: with SPLIT_K>1 or PERSISTENT=1"),
])
def test_tma_with_split_k_or_persistent_is_refused(extra, match):
    with pytest.raises(KernelPlanError, match=match):
        mm().check_plan(tma_plan(**extra), (64, 64, 64), torch.bfloat16, None, "rr")


def test_forced_tma_plan_on_a_problem_tma_cannot_read_is_refused(triton_device):
    """launch(config=TMA plan) where an operand's rows are not 16-byte aligned (a column-major
    A with M = 37 rows in fp32; K = 20 in bf16): a KernelPlanError naming TMA, the operand
    and the rule, before anything runs."""
    a_cols = torch.randn(72, 37, device=triton_device).t()          # [37, 72] column-major
    b = torch.randn(72, 40, device=triton_device)
    with pytest.raises(KernelPlanError, match=r"TMA=1: A's 37 elements a row.*multiples of 4"
                                              r".*layout 'cr'.*drop TMA"):
        mm().launch(a_cols, b, config=tma_plan())
    a16 = torch.randn(37, 20, device=triton_device, dtype=torch.bfloat16)
    b16 = torch.randn(20, 40, device=triton_device, dtype=torch.bfloat16)
    with pytest.raises(KernelPlanError, match=r"TMA=1: A's 20 elements a row.*multiples of 8"):
        mm().launch(a16, b16, config=tma_plan())


# --- a Linear's weight read as is ----------------------------------------------------------
@pytest.mark.parametrize("as_is", [True, False])
def test_linear_forward_reads_the_weight_as_is_or_a_copy(as_is, tma_device, tma_launches,
                                                         monkeypatch):
    """Where weight_as_is says so, kernels.linear's forward multiplies by the weight as is
    (column-major B, read by the TMA kernel through its transpose) and makes no row-major
    copy; elsewhere by the copy. Output and all three gradients equal float64 F.linear's
    (the backward's dW reads a column-major dZ^T through TMA too)."""
    asked = []   # weight_as_is's copy_cached: False under autograd (a copy each call)
    autograd, launcher = sub("autograd"), sub("launcher")
    monkeypatch.setattr(autograd, "weight_as_is", lambda *args, copy_cached: (
        asked.append(copy_cached), as_is)[1])
    monkeypatch.setattr(launcher, "candidate_plans", lambda *args: [tma_plan()])
    monkeypatch.setattr(launcher, "_LAUNCHES", {})
    copies, layouts = [], []
    real_copy, real_launch = autograd.weight_kn, autograd.launch
    monkeypatch.setattr(autograd, "weight_kn", lambda *a, **k: (copies.append(1),
                                                                 real_copy(*a, **k))[1])
    monkeypatch.setattr(autograd, "launch", lambda a, b, *rest, **kw: (
        layouts.append(launcher._layout(a)[1] + launcher._layout(b)[1]),
        real_launch(a, b, *rest, **kw))[1])
    kernels.set_backend("triton")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 20, 24, generator=g).to(tma_device).requires_grad_()
    w = (torch.randn(16, 24, generator=g) / 5).to(tma_device).requires_grad_()
    bias = torch.randn(16, generator=g).to(tma_device).requires_grad_()
    dy = torch.randn(2, 20, 16, generator=g).to(tma_device)
    with kernels.poisoned():
        y = kernels.linear(x, w, bias)
        y.backward(dy)
    assert layouts == ["rc" if as_is else "rr", "rr", "cr"]   # forward, dX, dW
    assert asked == [False]
    assert len(copies) == (0 if as_is else 1) and len(tma_launches) == 3
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, bias))
    yd = torch.nn.functional.linear(xd, wd, bd)
    yd.backward(dy.double())
    for got, want in [(y, yd), (x.grad, xd.grad), (w.grad, wd.grad), (bias.grad, bd.grad)]:
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_weight_as_is_only_where_the_tuner_has_tma_plans_for_it(monkeypatch):
    """weight_as_is asks tma_plans for layout 'rc' once per shape (cached), and says no for
    many-tile products whose copy is cached (inference at GPT-2's 16384x768->3072: the
    copy's product is faster) but yes where the copy would be made each call (training), on
    a CPU device or with tuning off (the untuned default is a plain plan, which reads the
    weight as is slower than the copy)."""
    asked, offered = [], [[tma_plan()]]
    weights = sub("weights")
    monkeypatch.setattr(weights, "num_sms", lambda device: 132)
    monkeypatch.setattr(weights, "_AS_IS", {})
    monkeypatch.setattr(weights, "tma_plans", lambda M, N, K, dtype, sms, device, layout: (
        asked.append(layout), offered[0])[1])
    cuda = torch.device("cuda", 0)
    monkeypatch.setenv("KERNELS_AUTOTUNE", "1")
    assert weights.weight_as_is(256, 1000, 2048, torch.bfloat16, cuda)
    assert weights.weight_as_is(256, 1000, 2048, torch.bfloat16, cuda) and asked == ["rc"]
    assert not weights.weight_as_is(16384, 3072, 768, torch.bfloat16, cuda, copy_cached=True)
    assert weights.weight_as_is(16384, 3072, 768, torch.bfloat16, cuda, copy_cached=False)
    assert weights.weight_as_is(256, 1000, 2048, torch.bfloat16, cuda, copy_cached=True)
    offered[0] = []
    assert not weights.weight_as_is(256, 1000, 2056, torch.bfloat16, cuda)
    offered[0] = [tma_plan()]
    assert not weights.weight_as_is(256, 1000, 2048, torch.bfloat16, torch.device("cpu"))
    monkeypatch.setenv("KERNELS_AUTOTUNE", "0")
    assert not weights.weight_as_is(256, 1000, 2048, torch.bfloat16, cuda)


# --- tall tiles (WIDE_M=1: 3/2 BLOCK_M rows x BLOCK_N as two dots, one program per tile) ----
@pytest.fixture
def tall_launches(monkeypatch):
    """The grids of every launch of the tall TMA kernel (a spy, as tma_launches)."""
    return spy_launches(monkeypatch, "_matmul_tma_wide_m_kernel")


def tall_plan(**extra):
    return tma_plan(BLOCK_M=32, BLOCK_N=16, GROUP_M=1, WIDE_M=1, **extra)


# (M, K, N) with 48x16 tiles (rows 32 + 16): 100 rows end in the third tile's first dot, so
# its second dot (rows 128-143) reads only zeros and stores nothing; 40 rows end inside the
# first tile's second dot; K = 72 ends mid-block; N = 40 ends mid-tile.
TALL_SHAPES = [(100, 72, 40), (40, 24, 16), (96, 64, 32)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias_on, activation", [(False, None), (True, "relu"), (True, "gelu")])
@pytest.mark.parametrize("shape", TALL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tall_tma_plan_matches_reference(shape, bias_on, activation, dtype, tma_device,
                                         tall_launches):
    """A forced tall plan: C and Z against float64 on NaN-poisoned outputs, so a row neither
    dot's store wrote fails; one launch of one program per 48x16 tile."""
    check_forced_plan(tall_plan(), shape, bias_on, activation, dtype, tma_device, RTOL[dtype],
                      seed=7)
    m, _, n = shape
    assert tall_launches == [(-(-m // 48) * -(-n // 16),)]


@pytest.mark.parametrize("layout", ["cr", "rc", "cc"])
def test_tall_tma_plan_reads_column_major_operands(layout, tma_device, tall_launches):
    """Column-major A (dW's dZ^T; both of its descriptors are over A^T) and B, as for the
    square TMA tiles: 100x72x40, bias and gelu, against float64."""
    a, b, bias = inputs((100, 72, 40), torch.float32, tma_device)
    a = column_major(a) if layout[0] == "c" else a
    b = column_major(b) if layout[1] == "c" else b
    with kernels.poisoned():
        c, z = mm().launch(a, b, bias, "gelu", store_preact=True, config=tall_plan())
    assert len(tall_launches) == 1
    pre = a.double() @ b.double() + bias.double()
    torch.testing.assert_close(z.double(), pre, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.double(), ref.activate(pre, "gelu"), rtol=1e-5, atol=1e-5)


def test_tall_plan_trains_a_linear(tma_device, tall_launches, monkeypatch):
    """Every product of a Linear's forward and backward through the tall kernel, from the
    launch cache (forward x @ W^T, dX = dY @ W, dW = dY^T @ x with A column-major), against
    float64 autograd."""
    from kernels import verify
    monkeypatch.setattr(sub("launcher"), "candidate_plans", lambda *args: [tall_plan()])
    monkeypatch.setattr(sub("launcher"), "_LAUNCHES", {})
    case = verify.Case("linear", (100, 72, 40), torch.bfloat16, bias=True)
    results = verify.run_case(case, mm().triton_linear, tma_device, seed=3)
    assert [r.stage for r in results] == ["forward", "grad:a", "grad:b", "grad:bias"]
    assert all(r.ok for r in results), verify.format_failures(results)
    assert len(tall_launches) == 3


def test_misaligned_view_under_a_tall_plan_runs_the_plain_kernel(tma_device, tall_launches):
    """A row stride TMA cannot read: the plain kernel with 32x16 tiles computes it."""
    a = torch.randn(100, 73, device=tma_device)[:, :72]
    b = torch.randn(72, 40, device=tma_device) / 8
    with kernels.poisoned():
        c, _ = mm().launch(a, b, config=tall_plan())
    assert tall_launches == []
    torch.testing.assert_close(c.double(), a.double() @ b.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("knobs, why", [
    (dict(TMA=0), "needs TMA=1"),
    (dict(WIDE=1, SPLIT_K=2), "WIDE=1 is a split-K kernel: .* none of PERSISTENT, TMA"),
    (dict(WIDE_M=2), "must be 1"),
    (dict(BLOCK_M=16), "BLOCK_M >= 32"),
])
def test_tall_plans_that_cannot_run_are_refused_by_name(knobs, why):
    plan = tall_plan()
    plan.update(knobs)
    with pytest.raises(KernelPlanError, match=why) as err:
        mm().check_plan(plan, (100, 40, 72), torch.bfloat16, None, "rr")
    assert err.value.stage == "validate" and err.value.plan == plan


def test_tall_plans_offered_for_16bit_products_that_hold_a_tall_tile(monkeypatch):
    """On a 132-SM GPU: ResNet's 12544x1152x128 gets the few-tile tall plan (192x64 tiles,
    132 of them, GROUP_M = 1); GPT-2's forward products the 192x256 one; fp32, a product with
    fewer than 192 rows, and KERNELS_TMA=0 none. Shared memory: the pipeline's stages of
    192 + BLOCK_N rows (the store's staging tile reuses them)."""
    monkeypatch.setenv("KERNELS_TMA", "1")
    tall = lambda m, n, k, dtype=torch.bfloat16: [
        p for p in mm().gpu_plans(m, n, k, dtype, sms=132, layout="rr") if p.get("WIDE_M")]
    [conv] = tall(12544, 128, 1152)
    assert mm().tile_shape(conv) == (192, 64) and conv["GROUP_M"] == 1
    assert -(-12544 // 192) * (128 // 64) == 132
    assert mm().smem_bytes(conv, torch.bfloat16) == (192 + 64) * 64 * 2 * 5
    [proj] = tall(16384, 768, 3072)
    assert mm().tile_shape(proj) == (192, 256)
    assert not tall(12544, 128, 1152, torch.float32) and not tall(128, 1000, 2048)
    monkeypatch.setenv("KERNELS_TMA", "0")
    assert not tall(12544, 128, 1152)
