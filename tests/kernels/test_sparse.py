"""kernels.block_sparse_linear (Triton kernel in the interpreter, cpu path) and the 2:4 path."""
import importlib

import pytest
import torch

import kernels
from kernels import reference as ref
from kernels import verify


CASES = verify.cases("block_sparse_linear", "small")


def sp():
    return importlib.import_module("kernels.sparse")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label())
def test_triton_matches_reference(case, triton_device):
    results = verify.run_case(case, sp().triton_block_sparse_linear, triton_device, seed=7)
    assert all(r.ok for r in results), verify.format_failures(results)


@pytest.mark.parametrize("case", [c for c in CASES if c.dtype != torch.float16],
                         ids=lambda c: c.label())
def test_cpu_path_matches_reference(case):
    results = verify.run_case(case, sp().cpu_block_sparse_linear, "cpu", seed=8)
    assert all(r.ok for r in results), verify.format_failures(results)


def test_layout_lists_nonzero_tiles_in_order():
    w = torch.zeros(48, 64)
    w[0:16, 32:48] = 1.0       # tile (0, 2)
    w[16:32, 0:16] = 1.0       # tile (1, 0)
    w[16:32, 48:64] = 2.0      # tile (1, 3)
    lay = sp().Layout(w, 16)
    assert lay.count.tolist() == [1, 2, 0]
    assert lay.cols[0, :1].tolist() == [2] and lay.cols[1, :2].tolist() == [0, 3]
    assert lay.t_count.tolist() == [1, 0, 1, 1]
    assert lay.density() == pytest.approx(3 / 12)


def test_layout_cache_follows_in_place_updates():
    w = ref.prune_blocks(torch.randn(64, 64), 16, 0.5)
    first = sp().layout(w, 16)
    assert sp().layout(w, 16) is first
    with torch.no_grad():
        w[:16, :16] = 1.0          # bumps w._version: the layout is recomputed
    assert sp().layout(w, 16) is not first
    assert bool(sp().layout(w, 16).mask[0, 0])


def test_fully_pruned_weight_gives_bias_only(triton_device):
    kernels.set_backend("triton")
    x = torch.randn(9, 64, device=triton_device)
    w = torch.zeros(32, 64, device=triton_device)
    b = torch.randn(32, device=triton_device)
    torch.testing.assert_close(kernels.block_sparse_linear(x, w, 16, b), b.expand(9, 32))


def test_prune_2_4_keeps_two_of_four():
    w = ref.prune_2_4(torch.randn(8, 16))
    assert ((w.reshape(8, 4, 4) != 0).sum(-1) <= 2).all()


def test_semi_structured_falls_back_to_dense_where_unsupported():
    w = ref.prune_2_4(torch.randn(64, 64))
    ok, why = sp().semi_structured_support(w)
    assert not ok and "CUDA" in why
    x = torch.randn(5, 64)
    torch.testing.assert_close(sp().semi_structured_linear(x, w), x @ w.t())


def test_linear_module_routes_pruned_layers_to_block_sparse(monkeypatch):
    calls = []
    real = kernels.block_sparse_linear
    monkeypatch.setattr(kernels, "block_sparse_linear",
                        lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    layer = kernels.Linear(64, 32)
    layer.sparse_block_size = 16
    kernels.set_backend("cpu")
    layer(torch.randn(3, 64))
    assert calls == [16]
