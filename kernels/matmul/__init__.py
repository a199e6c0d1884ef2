"""Matmul C = act(A @ B + bias) in Triton, one file per kernel family; trains through the
knlp_kernels::matmul / ::linear custom ops and their backward op (kernels/ops.py), whose
bodies are in autograd.py.

    plans.py      the plan tables of every family and the filters that make one problem's
                  autotune grid (candidate_plans) and refuse a plan that cannot run
    tiled.py      the tiled kernel (tutorial 03) and its persistent variant (PERSISTENT=1),
                  with the tile helpers the other families share
    split_k.py    split-K (SPLIT_K=S) and wide split-K (WIDE=1, 3/2 x 3/2 tiles)
    tma.py        the persistent TMA-descriptor kernel (TMA=1; tall tiles with WIDE_M=1)
    launcher.py   launch(): checks, plan choice, validation, the launch cache, dispatch
    weights.py    a Linear weight's row-major copy, or reading it as is
    autograd.py   the ops' forward and backward bodies, the triton route's entry points
    cpu.py        the cpu route (torch.addmm and torch's backward formulas)

Stream-K (STREAM_K) never won a measured shape: it lives in kernels/experimental/stream_k.py,
out of every default plan list, run only by a forced plan.
"""
from .autograd import (linear_forward, matmul_backward, matmul_forward, triton_linear,
                       triton_matmul)
from .cpu import cpu_linear, cpu_matmul
from .launcher import ACTIVATIONS, KERNELS, launch
from .plans import (KNOBS, candidate_plans, check_plan, gpu_plans, num_sms, smem_bytes,
                    split_k_plans, switched_on, tile_shape, tma_plans, wide_plans)
from .weights import weight_as_is, weight_kn

__all__ = ["triton_matmul", "triton_linear", "cpu_matmul", "cpu_linear", "matmul_forward",
           "linear_forward", "matmul_backward", "launch", "KERNELS", "ACTIVATIONS", "KNOBS",
           "candidate_plans", "gpu_plans", "tma_plans", "split_k_plans", "wide_plans",
           "check_plan", "smem_bytes", "tile_shape", "num_sms", "switched_on",
           "weight_as_is", "weight_kn"]
