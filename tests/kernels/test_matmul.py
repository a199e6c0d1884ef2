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
