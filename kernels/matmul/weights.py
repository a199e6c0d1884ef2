"""How kernels.linear's triton route reads a Linear weight [N, K]: as a row-major [K, N]
copy (weight_kn; the tiled kernel's faster B layout) or as is (weight_as_is: a column-major
B, which the TMA plans read through its transpose), in eager mode. Under torch.compile the
copy is traced instead, and inductor fuses it with autocast's cast (autograd.triton_linear).
"""
from __future__ import annotations

import weakref

import torch

from .. import autotune
from .plans import _tiles, num_sms, switched_on, tma_plans

_AS_IS: dict = {}


def weight_as_is(M: int, N: int, K: int, dtype: torch.dtype, device: torch.device,
                 copy_cached: bool = False) -> bool:
    """Whether a Linear's forward [M, K] @ weight[N, K]^T reads the weight as is rather
    than a row-major copy: where the tuner has TMA plans for that layout (sm_90+,
    KERNELS_TMA on, tuning on, rows 16-byte aligned), and either the product has few tiles
    (fewer 128x128 tiles than SMs: resnet50's fc 6.7 us as is vs 7.6 on the copy) or the
    copy would be made on every call (training: copy_cached False; the copy costs more than
    the slower product, 0.408 vs 0.414 ms for a GPT-2 Linear's fwd+bwd). Inference at
    GPT-2's shapes keeps its cached copy (117 us vs 123 as is at 16384x768->3072)."""
    tuning = autotune.mode()
    key = (M, N, K, dtype, device, copy_cached, switched_on("KERNELS_TMA"), tuning)
    hit = _AS_IS.get(key)
    if hit is None:
        hit = device.type == "cuda" and tuning != "0" and M > 0
        if hit:
            sms = num_sms(device)
            hit = (not copy_cached or _tiles(M, N, 128, 128) < sms) and \
                bool(tma_plans(M, N, K, dtype, sms, device, "rc"))
        _AS_IS[key] = hit
    return hit


_WEIGHT_KN: dict = {}


def weight_kn(weight: torch.Tensor, dtype: torch.dtype, cache: bool = True) -> torch.Tensor:
    """A row-major [K, N] copy of a Linear weight [N, K] in `dtype`. The forward product
    with it runs the tiled kernel's faster row-major-B layout (0.105 vs 0.124 ms at
    16384x768->2304 on the H100), and the copy is one pass over the weight; under autocast
    it replaces the bf16 cast F.linear makes anyway.

    Training (cache=False) copies on every call: a weight written through `.data` keeps its
    version counter, so no cache key could see the change. Inference reuses the copy while
    the tensor and its version are unchanged."""
    if cache:
        hit = _WEIGHT_KN.get(id(weight))
        if hit is not None and hit[0]() is weight and hit[1] == weight._version and \
                hit[2].dtype == dtype:
            return hit[2]
    with torch.no_grad():
        w_kn = torch.empty((weight.shape[1], weight.shape[0]), dtype=dtype,
                           device=weight.device)
        w_kn.copy_(weight.t())
    if cache:
        if len(_WEIGHT_KN) > 256:
            _WEIGHT_KN.clear()
        _WEIGHT_KN[id(weight)] = (weakref.ref(weight), weight._version, w_kn)
    return w_kn
