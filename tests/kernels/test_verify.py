"""The verifier catches wrong kernels (mutation testing) and invalid plans.

Mutants are the production files with one deliberate source edit each, loaded as separate
modules and swapped in where the code looks its implementations up (ops.FAMILIES for an op
module, the matmul launcher's KERNELS for a plan family), so the test exercises the real
kernels' code, not look-alikes. Each must fail the small grid by a numeric mismatch (or NaN
from an unwritten, poisoned element). Invalid plans must fail validation with a
KernelPlanError naming stage, shape, error and the plan's knobs.
"""
import importlib
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from kernels import _common, ops, verify
from kernels import reference as ref
from kernels._common import KernelPlanError


KERNELS_DIR = Path(importlib.import_module("kernels").__file__).parent

# name: (file under kernels/, op, [(original line, mutated line), ...])
MUTANTS = {
    "uniform_attention_weights": (
        "attention.py", "attention",
        [("qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale",
          "qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * 0.0")]),
    "missing_softmax_scale": (
        "attention.py", "attention",
        [("args = (q, k, v, o, lse, sm_scale * LOG2E,", "args = (q, k, v, o, lse, LOG2E,")]),
    "no_causal_mask": (
        "attention.py", "attention",
        [("keep = keep & (offs_m[:, None] >= cols[None, :])", "keep = keep")]),
    "off_by_one_store_edge": (
        "matmul/tiled.py", "matmul",
        [("c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)",
          "c_mask = (offs_cm[:, None] < M - 1) & (offs_cn[None, :] < N)")]),
    "off_by_one_k_edge": (
        "matmul/tiled.py", "matmul",
        [("mask=offs_k[None, :] < K - k * BLOCK_K,",
          "mask=offs_k[None, :] < K - k * BLOCK_K - 1,"),
         ("mask=offs_k[:, None] < K - k * BLOCK_K,",
          "mask=offs_k[:, None] < K - k * BLOCK_K - 1,")]),
    "bf16_accumulator": (
        "matmul/tiled.py", "matmul",
        [("acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)",
          "acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)"
          ".to(tl.bfloat16).to(tl.float32)")]),
    "block_sparse_skips_last_tile": (
        "sparse.py", "block_sparse_linear",
        [("for i in range(0, count):", "for i in range(0, count - 1):")]),
}
# the triton route's entry point of each op: the public function, unmutated; what runs
# beneath it is looked up, so the mutant swapped in is what runs
ENTRY = {"matmul": ("kernels.matmul", "triton_matmul"),
         "attention": ("kernels.attention", "triton_attention"),
         "block_sparse_linear": ("kernels.sparse", "triton_block_sparse_linear")}


def entry(op):
    module, fn = ENTRY[op]
    return getattr(importlib.import_module(module), fn)


def load_variant(path: str, edits, tag: str, tmp_path: Path):
    """A copy of kernels/<path> with `edits` applied, imported as a sibling module
    (kernels._mutant_<tag>, kernels.matmul._mutant_<tag>, ...), so its relative imports
    resolve as the original's do."""
    source = (KERNELS_DIR / path).read_text()
    for old, new in edits:
        assert old in source, f"mutation anchor not found in kernels/{path}: {old!r}"
        source = source.replace(old, new)
    file = tmp_path / f"_mutant_{tag}.py"
    file.write_text(source)
    name = ".".join(["kernels", *Path(path).parent.parts, f"_mutant_{tag}"])
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return mod


def swap_in(monkeypatch, path: str, mutant) -> None:
    """Make the code of kernels/<path> run as `mutant` for this test: a matmul plan family
    (matmul/tiled.py, matmul/split_k.py, matmul/tma.py, experimental/stream_k.py) through
    the launcher's KERNELS, with an empty launch cache; an op module (attention.py,
    sparse.py) through ops.FAMILIES."""
    stem = Path(path).stem
    if "/" in path:
        launcher = importlib.import_module("kernels.matmul.launcher")
        monkeypatch.setitem(launcher.KERNELS, stem, mutant)
        monkeypatch.setattr(launcher, "_LAUNCHES", {})
    else:
        monkeypatch.setitem(ops.FAMILIES, stem, mutant)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught_by_a_numeric_mismatch(name, tmp_path, triton_device, monkeypatch):
    path, op, edits = MUTANTS[name]
    swap_in(monkeypatch, path, load_variant(path, edits, name, tmp_path))
    results = verify.verify([op], impls={op: entry(op)}, grid="small",
                            device=triton_device, seed=11, stop_on_first=True)
    assert verify.caught(results), f"mutant {name} passed the verifier"
    first = next(r for r in results if not r.ok)
    assert first.stage == "forward" or first.stage.startswith("grad:")
    assert first.error is None and (first.err > first.tol or math.isinf(first.err))


@pytest.mark.parametrize("path, op", sorted({m[:2] for m in MUTANTS.values()}))
def test_unmutated_copy_passes_the_mutants_grid(path, op, tmp_path, triton_device,
                                                monkeypatch):
    """Control: the loader and the swap change nothing, and the unmutated code passes the
    very grid, dtypes and seed the mutants are checked on, so a mutant is caught by its
    mutation."""
    tag = "identity_" + path.replace("/", "_").removesuffix(".py")
    swap_in(monkeypatch, path, load_variant(path, [], tag, tmp_path))
    results = verify.verify([op], impls={op: entry(op)}, grid="small",
                            device=triton_device, seed=11)
    assert not verify.caught(results), verify.format_failures(results)


def matmul_plan(**knobs):
    plan = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4, "num_warps": 4,
            "num_stages": 2}
    plan.update(knobs)
    return plan


INVALID_PLANS = {
    "tile_not_power_of_two": ("matmul", matmul_plan(BLOCK_M=48), "not a power of two"),
    "tile_below_dot_minimum": ("matmul", matmul_plan(BLOCK_K=8), "below the minimum"),
    "block_larger_than_device_shared_memory": (
        "matmul", matmul_plan(BLOCK_M=512, BLOCK_N=512, BLOCK_K=256, num_stages=4),
        "shared memory"),
    "too_many_threads": ("matmul", matmul_plan(num_warps=64), "threads per block"),
    "split_k_not_power_of_two": ("matmul", matmul_plan(SPLIT_K=3),
                                 "SPLIT_K=3 must be a power of two"),
    "split_k_zero": ("matmul", matmul_plan(SPLIT_K=0), "SPLIT_K=0 must be a power of two"),
    "split_k_with_persistent": ("matmul", matmul_plan(SPLIT_K=2, PERSISTENT=1),
                                "split-K runs the tiled kernel only"),
    "stream_k_zero_programs": ("matmul", matmul_plan(STREAM_K=0),
                               "STREAM_K=0 must be the programs per SM"),
    "stream_k_with_split_k": ("matmul", matmul_plan(STREAM_K=1, SPLIT_K=2),
                              "stream-K is its own kernel"),
    "attention_tile_not_power_of_two": (
        "attention", {"BLOCK_M": 96, "BLOCK_N": 32, "BLOCK_D": 64, "num_warps": 4,
                      "num_stages": 2}, "not a power of two"),
    "attention_block_larger_than_device": (
        "attention", {"BLOCK_M": 1024, "BLOCK_N": 1024, "BLOCK_D": 64, "num_warps": 8,
                      "num_stages": 3}, "shared memory"),
    "attention_missing_knob": (
        "attention", {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2},
        "missing knobs"),
}


@pytest.mark.parametrize("name", sorted(INVALID_PLANS))
def test_invalid_plan_fails_validation_with_a_structured_error(name, triton_device):
    op, plan, expect = INVALID_PLANS[name]
    if op == "matmul":
        launch = importlib.import_module("kernels.matmul").launch
        impl = lambda a, b, bias, act: launch(a, b, bias, act, config=plan)[0]  # noqa: E731
        case = verify.Case("matmul", (64, 64, 64), torch.float32)
        shape = (64, 64, 64)
    else:
        forward = importlib.import_module("kernels.attention").forward
        impl = lambda q, k, v, causal: forward(q, k, v, causal, config=plan)[0]  # noqa: E731
        case = verify.Case("attention", (1, 2, 64, 64, 64), torch.float32, causal=True)
        shape = (1, 2, 64, 64, 64)
    [result] = verify.run_case(case, impl, triton_device, seed=13, backward=False)
    assert not result.ok and result.stage == "validate"
    exc = result.exception
    assert isinstance(exc, KernelPlanError)
    assert exc.stage == "validate" and exc.shape == shape and exc.plan == plan
    assert expect in exc.error
    message = str(exc)
    assert "validate" in message and str(shape) in message and expect in message
    assert all(f"{k}={v}" in message for k, v in plan.items())


# Mutants of the split-K path, which the verifier's grid does not reach (it tunes nothing:
# the first plan is never split), run with a forced split-K plan instead.
SPLIT_K_MUTANTS = {
    "split_k_reduce_skips_last_split": [("for s in range(0, SPLIT_K):",
                                         "for s in range(0, SPLIT_K - 1):")],
    "split_k_drops_remainder_blocks": [
        ("return split, split * k_blocks // SPLIT_K, (split + 1) * k_blocks // SPLIT_K",
         "return split, split * k_blocks // SPLIT_K, "
         "split * k_blocks // SPLIT_K + k_blocks // SPLIT_K")],
    "split_k_empty_split_not_stored": [
        ("        _store_partial(ws_ptr, split, acc, m0 + tl.arange(0, BLOCK_M),",
         "        if k_hi > k_lo:\n            _store_partial(ws_ptr, split, acc, "
         "m0 + tl.arange(0, BLOCK_M),")],
}

# Mutants of the wide split-K kernel (forced plan): one of its four dots not accumulated, one
# of its four partials not stored, its second rows loaded from the first rows' addresses.
WIDE_MUTANTS = {
    "wide_drops_a_dot": [("acc_hh = tl.dot(ah, bh, acc_hh, input_precision=DOT_PRECISION)",
                          "acc_hh = acc_hh")],
    "wide_skips_a_partial": [
        ("        _store_partial(ws_ptr, split, acc_hl, rows_hi, cols_lo,",
         "        _store_partial(ws_ptr, split, acc_hl * 0, rows_hi, cols_lo,")],
    "wide_hi_rows_read_lo": [("rows_hi = m0 + BLOCK_M + tl.arange(0, BLOCK_M // 2)",
                              "rows_hi = m0 + tl.arange(0, BLOCK_M // 2)")],
}


# Mutants of the stream-K kernel (experimental, so run with a forced plan): a head that adds
# no tail's partial sum, a tail that hands over zeros.
STREAM_K_MUTANTS = {
    "stream_k_head_skips_tails": [("while src_start < (tile + 1) * iters:",
                                   "while src_start < tile * iters:")],
    "stream_k_tail_hands_over_zeros": [
        ("tl.store(ws_ptr + unit.to(tl.int64) * (BLOCK_M * BLOCK_N) + offs_slot, acc)",
         "tl.store(ws_ptr + unit.to(tl.int64) * (BLOCK_M * BLOCK_N) + offs_slot, acc * 0)")],
}


def launch():
    return importlib.import_module("kernels.matmul.launcher").launch


@pytest.mark.parametrize("name", sorted(STREAM_K_MUTANTS))
def test_stream_k_mutant_is_caught(name, tmp_path, triton_device, monkeypatch):
    path = "experimental/stream_k.py"
    swap_in(monkeypatch, path, load_variant(path, STREAM_K_MUTANTS[name], name, tmp_path))
    plan = matmul_plan(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, STREAM_K=1)
    impl = lambda a, b, bias, act: launch()(a, b, bias, act, config=plan)[0]  # noqa: E731
    # 37x75x29: 6 tiles of 5 K blocks over 4 programs, so tiles are cut between programs
    results = verify.run_case(verify.Case("matmul", (37, 75, 29), torch.float32, bias=True),
                              impl, triton_device, seed=15, backward=False)
    assert verify.caught(results), f"mutant {name} passed"
    assert all(r.stage == "forward" and r.error is None for r in results)


@pytest.mark.parametrize("name", sorted(SPLIT_K_MUTANTS))
def test_split_k_mutant_is_caught(name, tmp_path, triton_device, monkeypatch):
    path = "matmul/split_k.py"
    swap_in(monkeypatch, path, load_variant(path, SPLIT_K_MUTANTS[name], name, tmp_path))
    plan = matmul_plan(BLOCK_M=16, BLOCK_K=16, SPLIT_K=4)
    impl = lambda a, b, bias, act: launch()(a, b, bias, act, config=plan)[0]  # noqa: E731
    # K = 75: 5 blocks of 16 in 4 splits (1+1+1+2); K = 20: 2 blocks, two splits empty
    results = [r for shape in [(37, 75, 29), (5, 20, 33)]
               for r in verify.run_case(verify.Case("matmul", shape, torch.float32, bias=True,
                                                    activation="gelu"),
                                        impl, triton_device, seed=14, backward=False)]
    assert verify.caught(results), f"mutant {name} passed"
    assert all(r.stage == "forward" and r.error is None for r in results)


@pytest.mark.parametrize("name", sorted(WIDE_MUTANTS))
def test_wide_split_k_mutant_is_caught(name, tmp_path, triton_device, monkeypatch):
    path = "matmul/split_k.py"
    swap_in(monkeypatch, path, load_variant(path, WIDE_MUTANTS[name], name, tmp_path))
    plan = matmul_plan(BLOCK_K=16, SPLIT_K=2, WIDE=1)   # 48x48 tiles as 32 + 16 a side
    impl = lambda a, b, bias, act: launch()(a, b, bias, act, config=plan)[0]  # noqa: E731
    # 100 x 70: two tile-rows and -columns, the last of each shifted; K = 75 ends mid-block
    results = verify.run_case(verify.Case("matmul", (100, 75, 70), torch.float32, bias=True),
                              impl, triton_device, seed=16, backward=False)
    assert verify.caught(results), f"mutant {name} passed"
    assert all(r.stage == "forward" and r.error is None for r in results)


# Mutants of the tall TMA kernel (matmul/tma.py, forced WIDE_M=1 plan): the second dot's
# product dropped, its rows loaded from the first dot's.
TALL_MUTANTS = {
    "tall_drops_the_hi_product": [("        _tma_epilogue(acc_hi, bias, ch_desc",
                                   "        _tma_epilogue(acc_hi * 0, bias, ch_desc")],
    "tall_hi_rows_read_lo": [("_tma_load_a(ah_desc, m_hi,", "_tma_load_a(ah_desc, m_lo,")],
    "tall_hi_tile_at_lo_rows": [("m_hi = m_lo + BLOCK_M", "m_hi = m_lo + BLOCK_M // 2")],
}


@pytest.mark.parametrize("name", sorted(TALL_MUTANTS) + ["control"])
def test_tall_tma_mutant_is_caught(name, tmp_path, triton_device, monkeypatch):
    """Each mutant fails the case; the unmutated copy ("control") passes it."""
    from kernels.matmul import tma
    if not tma.HAS_TMA:
        pytest.skip("this triton has no tensor descriptors")
    path = "matmul/tma.py"
    swap_in(monkeypatch, path, load_variant(path, TALL_MUTANTS.get(name, []), name, tmp_path))
    plan = matmul_plan(BLOCK_N=16, BLOCK_K=16, GROUP_M=1, TMA=1, WIDE_M=1)   # 48x16 tiles
    impl = lambda a, b, bias, act: launch()(a, b, bias, act, config=plan)[0]  # noqa: E731
    # 100 x 40: three tile-rows (the last ends in its first dot), three tile-columns
    results = verify.run_case(verify.Case("matmul", (100, 72, 40), torch.float32, bias=True),
                              impl, triton_device, seed=17, backward=False)
    if name == "control":
        assert not verify.caught(results), verify.format_failures(results)
        return
    assert verify.caught(results), f"mutant {name} passed"
    assert all(r.stage == "forward" and r.error is None for r in results)


def test_unwritten_output_is_caught_by_poisoning():
    """An impl that allocates its output and never writes it: NaN-filled under
    verification, so it fails even where torch.empty would have returned zeros."""
    def lazy(a, b, bias, act):
        out = _common.empty((a.shape[0], b.shape[1]), a.dtype, a.device)
        return out.requires_grad_()
    [r] = verify.run_case(verify.Case("matmul", (8, 8, 8), torch.float32), lazy, "cpu",
                          backward=False)
    assert not r.ok and math.isinf(r.err)


def test_nan_never_passes():
    nan = torch.tensor([float("nan"), 1.0])
    assert math.isinf(ref.rel_err(nan, nan))
    assert math.isinf(ref.rel_err(torch.tensor([float("inf")]), torch.tensor([1.0])))


def test_cli_small_grid_on_the_cpu_backend(tmp_path, capsys):
    out = tmp_path / "verify.json"
    rc = verify.main(["--backend", "cpu", "--device", "cpu", "--ops", "attention",
                      "--dtypes", "fp32", "--json", str(out)])
    assert rc == 0
    assert "checks passed" in capsys.readouterr().out
    assert out.exists()
