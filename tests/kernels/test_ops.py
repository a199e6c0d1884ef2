"""kernels/ops.py: the entry points as torch custom ops (namespace knlp_kernels).

torch.library.opcheck on every op and route (schema, fake tensors against the real outputs'
shapes, dtypes and strides, autograd registration, AOT dispatch with dynamic shapes); a tiny
GPT-2 with every Linear and the attention through the kernels compiles to one forward and
one backward graph (no graph break); compiled (aot_eager) and eager give the same loss and
gradients. The triton route runs in Triton's interpreter on CPU (conftest.py).
"""
import importlib

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from functorch.compile import make_boxed_func

import kernels
from kernels import reference as ref


@pytest.fixture(params=["cpu", "triton"])
def route(request):
    """Both routes of the ops; the triton one through the interpreter (skips without it)."""
    if request.param == "triton":
        request.getfixturevalue("triton_device")
    kernels.set_backend(request.param)   # registers the ops (kernels/ops.py)
    return request.param


def _rand(*shape, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=g).requires_grad_(grad)


def _gpt2_layout(B=2, T=9, H=2, D=16, seed=0):
    """q, k, v as GPT-2 makes them: views of one [B, T, 3C] tensor, [B, H, T, D] with
    strides (3TC, D, 3C, 1): not contiguous, not even dense."""
    qkv = _rand(B, T, 3 * H * D, grad=False, seed=seed)
    return [t.view(B, T, H, D).transpose(1, 2).detach().requires_grad_()
            for t in qkv.split(H * D, dim=2)]


def _opcheck(op, args):
    torch.library.opcheck(op, args)


# --- opcheck ------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_opcheck_matmul(route, activation):
    a = _rand(2, 5, 24)[:, :, :20]              # a strided view: K = 20 of 24 columns
    b, bias = _rand(20, 13), _rand(13)
    op = torch.ops.knlp_kernels
    _opcheck(op.matmul.default, (a, b, bias, activation, activation == "gelu", route))
    out, z = op.matmul(a, b, bias, activation, True, route)
    saved = z if activation == "gelu" else (out if activation == "relu" else None)
    grad = _rand(2, 5, 13, grad=False)
    for need in [(True, True, True), (False, True, False)]:
        _opcheck(op.matmul_backward.default,
                 (grad, a.detach(), b.detach(), None if saved is None else saved.detach(),
                  activation, False, *need, route))


def test_opcheck_linear(route):
    x, w, bias = _rand(3, 4, 24), _rand(13, 24), _rand(13)
    w_kn = w.detach().t().contiguous() if route == "triton" else None
    op = torch.ops.knlp_kernels
    _opcheck(op.linear.default, (x, w, bias, w_kn, route))
    _opcheck(op.linear.default, (x[0], w, None, w_kn, route))
    _opcheck(op.matmul_backward.default,
             (_rand(3, 4, 13, grad=False), x.detach(), w.detach(), None, None, True,
              True, True, True, route))


@pytest.mark.parametrize("causal", [True, False])
def test_opcheck_attention(route, causal):
    q, k, v = _gpt2_layout()
    block = 4 if route == "cpu" else 0            # several key blocks on the cpu path
    args = (causal, 0.25, route, block)
    op = torch.ops.knlp_kernels
    _opcheck(op.attention.default, (q, k, v, *args))
    out, lse = op.attention(q, k, v, *args)
    grad = _rand(*out.shape, grad=False)
    _opcheck(op.attention_backward.default,
             (grad, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), *args))


def test_opcheck_attention_bf16(route):
    """16-bit inputs: the cpu route's O and LSE come back in fp32, the triton route's O in
    bf16 (the fakes must say so)."""
    q, k, v = (t.detach().to(torch.bfloat16).requires_grad_() for t in _gpt2_layout(T=5))
    _opcheck(torch.ops.knlp_kernels.attention.default,
             (q, k, v, True, 0.25, route, 0 if route == "triton" else 256))


@pytest.mark.parametrize("sparsity, sampled_dw", [(0.3, False), (0.8, True)])
def test_opcheck_block_sparse_linear(route, sparsity, sampled_dw):
    """Both paths (0.3: dense under the untimed rule, 0.8: the block-sparse kernels) and
    both dW modes."""
    g = torch.Generator().manual_seed(3)
    w = ref.prune_blocks(torch.randn(64, 96, generator=g), 32, sparsity, generator=g)
    w.requires_grad_()
    lay = importlib.import_module("kernels.block_layout").Layout(w, 32)
    x = _rand(3, 96, 5).transpose(1, 2)          # x [3, 5, 96], not contiguous
    bias = _rand(64)
    op = torch.ops.knlp_kernels
    args = (*lay.tensors(), 32, lay.density())
    _opcheck(op.block_sparse_linear.default, (x, w, bias, *args, True, sampled_dw, route))
    _opcheck(op.block_sparse_linear_backward.default,
             (_rand(3, 5, 64, grad=False), x.detach(), w.detach(), *args, sampled_dw, True,
              True, True, route))


def test_route_is_checked():
    kernels.set_backend("cpu")
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="route 'torch'"):
        torch.ops.knlp_kernels.linear(x, w, None, None, "torch")


def test_ops_run_the_family_the_registry_names(route, monkeypatch):
    """The schemas name no implementation: each op runs ops.FAMILIES[family]'s functions,
    so swapping the registry entry (as the mutation tests do) swaps what runs, through the
    op and its fake alike."""
    from kernels import ops
    real = importlib.import_module("kernels.matmul")
    calls = []

    class Spy:
        def linear_forward(self, *args):
            calls.append(args[0])
            return real.linear_forward(*args)

    monkeypatch.setitem(ops.FAMILIES, "matmul", Spy())
    x, w = _rand(3, 8), _rand(4, 8)
    torch.testing.assert_close(kernels.linear(x, w), x @ w.t(), rtol=1e-5, atol=1e-5)
    assert calls == [route]


def test_inference_records_no_autograd(route):
    """No input needs grad: no graph node, and gelu's pre-activation is not stored."""
    a, b = _rand(5, 8), _rand(8, 6)
    with torch.no_grad():
        y = kernels.matmul(a, b, activation="gelu")
    assert y.grad_fn is None
    y = kernels.matmul(a, b, activation="gelu")
    assert y.grad_fn is not None


# --- torch.compile: one graph, same numbers -------------------------------------------------
def _tiny_gpt2(sparse_block_size=0):
    from gpt2.config import Config
    from gpt2.model import GPT
    torch.manual_seed(0)
    model = GPT(Config(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64), 64)
    kernels.swap_linear(model, sparse_block_size=sparse_block_size)  # kernel_linear
    if sparse_block_size:    # prune the blocks' weights as the pruner would, then sync
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("transformer.h.") and p.ndim == 2:
                    p.copy_(ref.prune_blocks(p, sparse_block_size, 0.75))
        kernels.sync_block_layouts(model, sampled_dw=True)
    return model


def _recording_aot_eager(graphs):
    """aot_eager that keeps the forward and backward graphs it is given."""
    def keep(kind):
        def compiler(gm, example_inputs):
            graphs.setdefault(kind, []).append(gm)
            return make_boxed_func(gm.forward)
        return compiler
    return aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"))


def _ops_in(gm):
    return {str(n.target).split(".")[1] for n in gm.graph.nodes
            if str(n.target).startswith("knlp_kernels.")}


def test_tiny_gpt2_compiles_to_one_graph_and_matches_eager(route):
    """GPT-2 (2 layers, 32 wide, 16 tokens) with kernel_linear: the forward is one dynamo
    graph (no graph break: a kernels call that breaks fails here), AOT autograd traces one
    backward graph with the backward ops in it, and the compiled step gives eager's loss and
    gradients (fp32, same ops in the same order)."""
    _check_compiled_gpt2(sparse=0)


def test_tiny_gpt2_block_sparse_compiles_to_one_graph():
    """The same with pruned layers (cfg.pruning_block_size = 16): block_sparse_linear, cpu
    route (the op wiring is route-independent; the triton route is covered above)."""
    kernels.set_backend("cpu")
    _check_compiled_gpt2(sparse=16)


def _check_compiled_gpt2(sparse):
    model = _tiny_gpt2(sparse)
    g = torch.Generator().manual_seed(1)
    idx, targets = (torch.randint(0, 64, (2, 16), generator=g) for _ in range(2))

    loss_eager = model(idx, targets)
    loss_eager.backward()
    grads_eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    torch._dynamo.reset()
    counters.clear()
    graphs = {}
    compiled = torch.compile(model, backend=_recording_aot_eager(graphs))
    loss = compiled(idx, targets)
    loss.backward()
    assert not counters["graph_break"], f"graph breaks: {dict(counters['graph_break'])}"
    assert len(graphs.get("fw", [])) == 1 and len(graphs.get("bw", [])) == 1, graphs
    # pruned: the blocks' layers take the block-sparse op, the unpruned head stays dense
    fwd = {"block_sparse_linear"} if sparse else set()
    bwd = {"block_sparse_linear_backward"} if sparse else set()
    assert _ops_in(graphs["fw"][0]) == fwd | {"linear", "attention"}
    assert _ops_in(graphs["bw"][0]) == bwd | {"matmul_backward", "attention_backward"}
    # the cross-entropy is in the same graph as the head's op (it fuses under inductor)
    assert any("nll_loss" in str(n.target) for n in graphs["fw"][0].graph.nodes)

    torch.testing.assert_close(loss, loss_eager, rtol=1e-6, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads_eager[name], rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
    torch._dynamo.reset()


def test_autocast_casts_are_traced_before_the_op():
    """Under autocast the entry point casts (ordinary traced .to()); the op sees bf16."""
    kernels.set_backend("cpu")
    lin = kernels.Linear(16, 8)
    x = torch.randn(4, 16)
    torch._dynamo.reset()
    counters.clear()
    graphs = {}

    def f(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return lin(x)

    y = torch.compile(f, backend=_recording_aot_eager(graphs))(x)
    assert y.dtype == torch.bfloat16 and not counters["graph_break"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(y, lin(x), rtol=0, atol=0)
    torch._dynamo.reset()


def test_eager_inference_calls_the_body_directly_and_training_the_op():
    """The custom op's dispatch is skipped when nothing needs grad and nothing is traced (it
    costs more than a small kernel's launch); autograd still goes through the op."""
    from torch.profiler import profile
    kernels.set_backend("cpu")
    try:
        x, w = torch.randn(8, 16), torch.randn(4, 16, requires_grad=True)

        def op_calls(fn):
            with profile() as prof:
                fn()
            return sum(e.count for e in prof.key_averages() if e.key == "knlp_kernels::linear")
        with torch.no_grad():
            assert op_calls(lambda: kernels.linear(x, w)) == 0
        assert op_calls(lambda: kernels.linear(x, w).sum().backward()) == 1
        with torch.no_grad():
            torch.testing.assert_close(kernels.linear(x, w), torch.nn.functional.linear(x, w))
    finally:
        kernels.set_backend("torch")
