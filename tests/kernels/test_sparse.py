"""kernels.block_sparse_linear (Triton kernels in the interpreter, cpu path): forward, dX,
the block-sampled dW, layouts owned by kernels.Linear, routing; and the 2:4 path."""
import importlib

import pytest
import torch

import kernels
from kernels import reference as ref
from kernels import verify


CASES = verify.cases("block_sparse_linear", "small")


def sp():
    return importlib.import_module("kernels.sparse")


def semi():
    return importlib.import_module("kernels.semi_structured")


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


def _pruned(n, k, block, sparsity, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return ref.prune_blocks(torch.randn(n, k, generator=g), block, sparsity,
                            generator=g).to(dtype)


# odd shapes: N, K not multiples of the tile, M not a multiple of BLOCK_M; plans with and
# without slicing the tokens (SPLIT)
@pytest.mark.parametrize("M, N, K, split", [(37, 48, 64, 1), (37, 70, 100, 4), (130, 32, 48, 2)])
def test_sampled_dw_matches_float64_on_the_nonzero_tiles(M, N, K, split, triton_device):
    tile = 16
    w = _pruned(N, K, tile, 0.6, seed=M)
    g = torch.Generator().manual_seed(N)
    dy, x = torch.randn(M, N, generator=g), torch.randn(M, K, generator=g)
    lay = sp().Layout(w, tile)
    plan = {"BLOCK_M": 16, "BLOCK_T": tile, "SPLIT": split, "num_warps": 4, "num_stages": 1}
    dw = sp().launch_sampled_dw(dy.to(triton_device), x.to(triton_device),
                                lay.count.to(triton_device), lay.cols.to(triton_device), tile,
                                config=plan).cpu()
    keep = lay.mask.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:N, :K]
    expect = (dy.double().t() @ x.double()) * keep
    torch.testing.assert_close(dw.double(), expect, rtol=1e-4, atol=1e-4)
    assert (dw[~keep] == 0).all() and keep.any() and not keep.all()


@pytest.mark.parametrize("route", ["cpu", "triton"])
def test_module_step_sampled_dw_equals_masked_dense_gradients(route, request):
    """A synced layer's forward, dX and (sampled) dW against the dense torch layer whose
    gradient is masked as the pruner masks it, with both the block-sparse and dense paths."""
    if route == "triton":
        request.getfixturevalue("triton_device")
    kernels.set_backend(route)
    w = _pruned(64, 96, 32, 0.75, seed=4)
    layer = kernels.Linear(96, 64)
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.sparse_block_size = 32
    densities = kernels.sync_block_layouts(layer, sampled_dw=True)
    assert layer.block_active and densities[""] == pytest.approx(0.25, abs=0.1)
    dense = torch.nn.Linear(96, 64)
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(5, 7, 96)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    layer(x1).square().sum().backward()
    dense(x2).square().sum().backward()
    keep = w != 0
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.weight.grad, dense.weight.grad * keep, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, dense.bias.grad, rtol=1e-4, atol=1e-4)


def test_layer_is_dense_until_synced_and_dense_weights_stay_dense(monkeypatch):
    """Routing by the module: no block-sparse call before sync_block_layouts; after it, a
    pruned layer takes the block-sparse op and a layer with no zero tile (the head) stays
    on the dense path."""
    kernels.set_backend("cpu")
    bl = importlib.import_module("kernels.block_layout")
    calls = []
    real = bl.module_forward
    monkeypatch.setattr(bl, "module_forward", lambda m, *a: calls.append(m) or real(m, *a))
    pruned, head = kernels.Linear(64, 64), kernels.Linear(64, 64)
    with torch.no_grad():
        pruned.weight.copy_(_pruned(64, 64, 32, 0.5))
    model = torch.nn.Sequential(pruned, head)
    kernels.swap_linear(model, sparse_block_size=32)
    x = torch.randn(3, 64)
    model(x)
    assert calls == []
    kernels.sync_block_layouts(model)
    assert pruned.block_active and not head.block_active
    torch.testing.assert_close(model(x), head(pruned.weight.mm(x.t()).t() + pruned.bias))
    assert calls == [pruned]
    assert "block_count" not in pruned.state_dict()       # layouts are not checkpointed


def test_sync_after_a_mask_change_updates_the_buffers_in_place():
    """Layout invalidation: a new mask is seen after the next sync, through the same
    buffers (a CUDA graph that reads them stays valid)."""
    kernels.set_backend("cpu")
    layer = kernels.Linear(64, 64, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_pruned(64, 64, 32, 0.5, seed=2))
    layer.sparse_block_size = 32
    kernels.sync_block_layouts(layer)
    ptr, before = layer.block_cols.data_ptr(), layer.block_count.clone()
    with torch.no_grad():
        layer.weight[:32, :] = 0            # prune tile-row 0 entirely
    x = torch.randn(4, 64)
    kernels.sync_block_layouts(layer)
    assert layer.block_cols.data_ptr() == ptr
    assert layer.block_count[0] == 0 and layer.block_count.sum() < before.sum()
    torch.testing.assert_close(layer(x), x @ layer.weight.t())


def test_routing_rule_and_density_buckets():
    """Untimed (cpu, or KERNELS_AUTOTUNE=0): the block-sparse path at or below
    SPARSE_BELOW[route], dense above; densities bucket up to DENSITY_STEP."""
    s = sp()
    assert s.bucket_density(0.1) == 0.1 and s.bucket_density(0.101) == 0.15
    assert s.bucket_density(0.999) == 1.0 and s.bucket_density(0.0) == 0.0
    x, w = torch.randn(8, 64), torch.randn(64, 64)
    lays = sp().Layout(w, 32).tensors()
    for route, below in s.SPARSE_BELOW.items():
        assert s.path_for(route, x, w, lays, 32, below, True, True) == "sparse"
        assert s.path_for(route, x, w, lays, 32, below + 0.01, True, True) == "dense"


def test_prune_2_4_keeps_two_of_four():
    w = ref.prune_2_4(torch.randn(8, 16))
    assert ((w.reshape(8, 4, 4) != 0).sum(-1) <= 2).all()


def test_semi_structured_falls_back_to_dense_where_unsupported():
    w = ref.prune_2_4(torch.randn(64, 64))
    ok, why = semi().semi_structured_support(w)
    assert not ok and "CUDA" in why
    x = torch.randn(5, 64)
    torch.testing.assert_close(semi().semi_structured_linear(x, w), x @ w.t())


