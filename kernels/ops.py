"""The kernels' entry points as torch custom ops (namespace "knlp_kernels"), so that
torch.compile traces each call as one opaque node instead of breaking the graph there.

    knlp_kernels::matmul(a, b, bias?, activation?, store_preact, route) -> (out, preact)
    knlp_kernels::linear(x, weight, bias?, weight_kn?, route) -> out
    knlp_kernels::matmul_backward(grad, a, b, saved?, activation?, weight_layout,
                                  need_a, need_b, need_bias, route) -> (da, db, dbias)
    knlp_kernels::attention(q, k, v, causal, scale, route, block) -> (out, lse)
    knlp_kernels::attention_backward(grad, q, k, v, out, lse, causal, scale, route, block)
                                     -> (dq, dk, dv)
    knlp_kernels::block_sparse_linear(x, weight, bias?, count, cols, t_count, t_cols, tile,
                                      density, train, sampled_dw, route) -> out
    knlp_kernels::block_sparse_linear_backward(grad, x, weight, count, cols, t_count, t_cols,
                                               tile, density, sampled_dw, need_x, need_w,
                                               need_bias, route) -> (dx, dw, dbias)

`route` ("triton" or "cpu") is decided by the Python entry point (kernels._route) before the
call; the "torch" route never comes here (plain torch ops, which inductor fuses best). One op
per function for both routes, so the CPU tests exercise the same op, fake and autograd
wiring that the GPU runs. Each forward returns what its backward needs (gelu's
pre-activation, attention's row log-sum-exp); the backward is a custom op too, so AOT
autograd traces the backward graph without a break. Gradients that are not needed come back
as empty tensors (shape [0]); a custom op cannot return None. Bias gradients come back in
the dtype they were summed in (fp32 on the triton route); the cast to the bias dtype is an
ordinary traced op in the autograd formula. linear's and block_sparse_linear's bias
gradients are not the op's at all: their autograd formulas sum them with traced torch ops
(need_bias is False there; the block-sparse backward keeps it for direct callers).

Each op's fake (register_fake) allocates exactly as the real op does (shape, dtype and
strides; tests/kernels/test_ops.py checks them with torch.library.opcheck). The bodies are
the kernel modules' functions, found through FAMILIES; this module holds only the op
definitions.
"""
# no `from __future__ import annotations`: torch.library reads these annotations as types
import importlib
from typing import Optional

import torch

NAMESPACE = "knlp_kernels"
ROUTES = ("triton", "cpu")


# op family -> the module whose functions its ops run, or that module's name (imported on
# first use: these modules import this one). Tests swap a family for a mutant copy with
# monkeypatch.setitem(ops.FAMILIES, "attention", mutant).
FAMILIES: dict = {"matmul": f"{__package__}.matmul", "attention": f"{__package__}.attention",
                  "sparse": f"{__package__}.sparse"}


def _impl(family: str):
    """The module that runs `family`'s ops (FAMILIES)."""
    mod = FAMILIES[family]
    return importlib.import_module(mod) if isinstance(mod, str) else mod


def _mod(name: str):
    """kernels.attention's own helpers for the fakes (shapes only, never swapped)."""
    return importlib.import_module(f"{__package__}.{name}")


def _check_route(route: str) -> None:
    if route not in ROUTES:
        raise ValueError(f"{NAMESPACE}: route {route!r}: choose one of {', '.join(ROUTES)} "
                         "(the torch route calls kernels/reference.py, not an op)")


def _none(t: torch.Tensor) -> torch.Tensor:
    """Placeholder for an output that is not computed (custom ops return no None)."""
    return t.new_empty(0)


def needs_grad(*tensors) -> bool:
    """Whether autograd will record the call: the custom op's own test, made in the entry
    point so the forward stores what the backward needs only then."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --- matmul / linear ----------------------------------------------------------------------
def _matmul_body(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor],
                 activation: Optional[str], store_preact: bool,
                 route: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_route(route)
    c, z = _impl("matmul").matmul_forward(route, a, b, bias, activation, store_preact)
    return c, (z if z is not None else _none(a))


_matmul = torch.library.custom_op(f"{NAMESPACE}::matmul", _matmul_body, mutates_args=())


@_matmul.register_fake
def _(a, b, bias, activation, store_preact, route):
    shape = (*a.shape[:-1], b.shape[1])
    z = a.new_empty(shape) if store_preact and activation == "gelu" else _none(a)
    return a.new_empty(shape), z


def _linear_body(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 weight_kn: Optional[torch.Tensor], route: str) -> torch.Tensor:
    _check_route(route)
    return _impl("matmul").linear_forward(route, x, weight, bias, weight_kn)


_linear = torch.library.custom_op(f"{NAMESPACE}::linear", _linear_body, mutates_args=())


@_linear.register_fake
def _(x, weight, bias, weight_kn, route):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op(f"{NAMESPACE}::matmul_backward", mutates_args=())
def _matmul_backward(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     saved: Optional[torch.Tensor], activation: Optional[str],
                     weight_layout: bool, need_a: bool, need_b: bool, need_bias: bool,
                     route: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_route(route)
    da, db, dbias = _impl("matmul").matmul_backward(route, grad, a, b, saved, activation,
                                                     weight_layout, need_a, need_b, need_bias)
    return (da if da is not None else _none(a), db if db is not None else _none(a),
            dbias if dbias is not None else _none(a))


@_matmul_backward.register_fake
def _(grad, a, b, saved, activation, weight_layout, need_a, need_b, need_bias, route):
    n = b.shape[0] if weight_layout else b.shape[1]
    bias_dtype = torch.float32 if route == "triton" else a.dtype
    return (a.new_empty(a.shape) if need_a else _none(a),
            a.new_empty(b.shape) if need_b else _none(a),
            a.new_empty((n,), dtype=bias_dtype) if need_bias else _none(a))


def _bias_grad(dbias, need, dtype):
    return dbias.to(dtype) if need else None


def _matmul_setup(ctx, inputs, output):
    a, b, bias, activation, store_preact, route = inputs
    out, z = output
    saved = z if activation == "gelu" else (out if activation == "relu" else None)
    ctx.save_for_backward(a, b, saved)
    ctx.activation, ctx.route = activation, route
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _matmul_grad(ctx, grad, _grad_preact):
    a, b, saved = ctx.saved_tensors
    need = ctx.needs_input_grad
    if ctx.activation == "gelu" and saved.numel() != grad.numel():
        raise RuntimeError("knlp_kernels::matmul: gelu's backward needs the pre-activation, "
                           "which the forward did not store (store_preact=False)")
    da, db, dbias = torch.ops.knlp_kernels.matmul_backward(
        grad, a, b, saved, ctx.activation, False, need[0], need[1], need[2], ctx.route)
    return (da if need[0] else None, db if need[1] else None,
            _bias_grad(dbias, need[2], ctx.bias_dtype), None, None, None)


def _linear_setup(ctx, inputs, output):
    x, weight, bias, _weight_kn, route = inputs
    ctx.save_for_backward(x, weight)
    ctx.route = route
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _linear_grad(ctx, grad):
    x, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dw, _ = torch.ops.knlp_kernels.matmul_backward(
        grad, x, weight, None, None, True, need[0], need[1], False, ctx.route)
    # The bias gradient as traced torch ops, not inside the opaque op: under torch.compile
    # inductor writes the reduction itself and may fuse it with grad's producer. Inside the
    # op it was ATen's sum, 7.7 ms of a 150 ms GPT-2 step on the H100.
    dbias = grad.reshape(-1, grad.shape[-1]).sum(0, dtype=torch.float32) if need[2] else None
    return (dx if need[0] else None, dw if need[1] else None,
            _bias_grad(dbias, need[2], ctx.bias_dtype), None, None)


_matmul.register_autograd(_matmul_grad, setup_context=_matmul_setup)
_linear.register_autograd(_linear_grad, setup_context=_linear_setup)


# --- attention ----------------------------------------------------------------------------
def _attention_body(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                    scale: float, route: str, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_route(route)
    attn = _impl("attention")
    if route == "triton":
        return attn.forward(q, k, v, causal, scale)
    return attn.cpu_forward(q, k, v, causal, scale, block)


_attention = torch.library.custom_op(f"{NAMESPACE}::attention", _attention_body,
                                     mutates_args=())


@_attention.register_fake
def _(q, k, v, causal, scale, route, block):
    B, H, Tq, _ = q.shape
    if route == "triton":   # O like q (after _unit_last), LSE [B*H, T_q] fp32 (log2 domain)
        return torch.empty_like(_mod("attention")._unit_last(q)), \
            q.new_empty((B * H, Tq), dtype=torch.float32)
    wd = _mod("attention").cpu_work_dtype(q.dtype)   # cpu: O and LSE in the working dtype
    return q.new_empty((B, H, Tq, v.shape[3]), dtype=wd), q.new_empty((B, H, Tq), dtype=wd)


@torch.library.custom_op(f"{NAMESPACE}::attention_backward", mutates_args=())
def _attention_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float,
                        route: str, block: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_route(route)
    attn = _impl("attention")
    if route == "triton":
        return attn.backward(q, k, v, out, lse, grad, causal, scale)
    return attn.cpu_backward(grad, q, k, v, out, lse, causal, scale, block)


@_attention_backward.register_fake
def _(grad, q, k, v, out, lse, causal, scale, route, block):
    attn = _mod("attention")
    if route == "triton":
        return tuple(torch.empty_like(attn._unit_last(t)) for t in (q, k, v))
    wd = attn.cpu_work_dtype(q.dtype)
    return tuple(torch.empty_like(t.to(wd)).to(t.dtype) for t in (q, k, v))


def _attention_setup(ctx, inputs, output):
    q, k, v, causal, scale, route, block = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal, ctx.scale, ctx.route, ctx.block = causal, scale, route, block


def _attention_grad(ctx, grad, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.knlp_kernels.attention_backward(
        grad, q, k, v, out, lse, ctx.causal, ctx.scale, ctx.route, ctx.block)
    return dq, dk, dv, None, None, None, None


_attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# --- block-sparse linear ------------------------------------------------------------------
# The layout (count, cols, t_count, t_cols: kernels/block_layout.py) is an input, so it lives
# in buffers outside the op: a captured CUDA graph reads them, and no call allocates one.
def _block_sparse_linear_body(x: torch.Tensor, weight: torch.Tensor,
                              bias: Optional[torch.Tensor], count: torch.Tensor,
                              cols: torch.Tensor, t_count: torch.Tensor, t_cols: torch.Tensor,
                              tile: int, density: float, train: bool, sampled_dw: bool,
                              route: str) -> torch.Tensor:
    _check_route(route)
    return _impl("sparse").block_sparse_forward(route, x, weight, bias, count, cols, t_count,
                                                t_cols, tile, density, train, sampled_dw)


_block_sparse_linear = torch.library.custom_op(f"{NAMESPACE}::block_sparse_linear",
                                               _block_sparse_linear_body, mutates_args=())


@_block_sparse_linear.register_fake
def _(x, weight, bias, count, cols, t_count, t_cols, tile, density, train, sampled_dw, route):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op(f"{NAMESPACE}::block_sparse_linear_backward", mutates_args=())
def _block_sparse_linear_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                  count: torch.Tensor, cols: torch.Tensor,
                                  t_count: torch.Tensor, t_cols: torch.Tensor, tile: int,
                                  density: float, sampled_dw: bool, need_x: bool,
                                  need_w: bool, need_bias: bool, route: str
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_route(route)
    dx, dw, dbias = _impl("sparse").block_sparse_backward(
        route, grad, x, weight, count, cols, t_count, t_cols, tile, density, sampled_dw,
        need_x, need_w, need_bias)
    return (dx if dx is not None else _none(x), dw if dw is not None else _none(x),
            dbias if dbias is not None else _none(x))


@_block_sparse_linear_backward.register_fake
def _(grad, x, weight, count, cols, t_count, t_cols, tile, density, sampled_dw, need_x,
      need_w, need_bias, route):
    bias_dtype = torch.float32 if route == "triton" else x.dtype
    return (x.new_empty(x.shape) if need_x else _none(x),
            x.new_empty(weight.shape) if need_w else _none(x),
            x.new_empty((weight.shape[0],), dtype=bias_dtype) if need_bias else _none(x))


def _block_sparse_setup(ctx, inputs, output):
    x, weight, bias, count, cols, t_count, t_cols, tile, density, _train, sampled_dw, \
        route = inputs
    ctx.save_for_backward(x, weight, count, cols, t_count, t_cols)
    ctx.tile, ctx.density, ctx.sampled_dw, ctx.route = tile, density, sampled_dw, route
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _block_sparse_grad(ctx, grad):
    x, weight, count, cols, t_count, t_cols = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, dw, _ = torch.ops.knlp_kernels.block_sparse_linear_backward(
        grad, x, weight, count, cols, t_count, t_cols, ctx.tile, ctx.density, ctx.sampled_dw,
        need[0], need[1], False, ctx.route)
    # as in _linear_grad: the bias gradient as traced ops, which inductor fuses (inside the
    # op, its fp32 copy of dY and the sum were ~3 ms of a 90-percent-pruned GPT-2 step)
    dbias = grad.reshape(-1, grad.shape[-1]).sum(0, dtype=torch.float32) if need[2] else None
    return (dx if need[0] else None, dw if need[1] else None,
            _bias_grad(dbias, need[2], ctx.bias_dtype)) + (None,) * 9


_block_sparse_linear.register_autograd(_block_sparse_grad, setup_context=_block_sparse_setup)


# --- what the entry points call -----------------------------------------------------------
def _direct(*tensors) -> bool:
    """Eager inference (nothing for autograd to record, nothing being traced) calls an op's
    body directly: the custom op's dispatch costs more than a small kernel's launch (linear
    forward at 64x64 on the CI host: 32 us through the op, 4 us direct)."""
    return not needs_grad(*tensors) and not torch.compiler.is_compiling()


def matmul(a, b, bias, activation, route):
    """act(a @ b + bias) through knlp_kernels::matmul; gelu's pre-activation is stored only
    when autograd records the call."""
    if _direct(a, b, bias):
        return _matmul_body(a, b, bias, activation, False, route)[0]
    store = activation == "gelu" and needs_grad(a, b, bias)
    return torch.ops.knlp_kernels.matmul(a, b, bias, activation, store, route)[0]


def linear(x, weight, bias, weight_kn, route):
    if _direct(x, weight, bias):
        return _linear_body(x, weight, bias, weight_kn, route)
    return torch.ops.knlp_kernels.linear(x, weight, bias, weight_kn, route)


def attention(q, k, v, causal, scale, route, block=0):
    """O in q's dtype (the cpu route computes in fp32 for 16-bit inputs: the cast back is a
    traced op, and its backward casts dO to fp32 as the cpu path always did)."""
    if _direct(q, k, v):
        out, _lse = _attention_body(q, k, v, causal, scale, route, block)
    else:
        out, _lse = torch.ops.knlp_kernels.attention(q, k, v, causal, scale, route, block)
    return out.to(q.dtype)


def block_sparse_linear(x, weight, bias, count, cols, t_count, t_cols, tile, density, train,
                        sampled_dw, route):
    args = (x, weight, bias, count, cols, t_count, t_cols, tile, density, train, sampled_dw,
            route)
    if _direct(x, weight, bias):
        return _block_sparse_linear_body(*args)
    return torch.ops.knlp_kernels.block_sparse_linear(*args)
