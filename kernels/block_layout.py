"""Tile layouts of block-pruned weights (kernels/sparse.py multiplies with them).

A Layout lists, for each tile-row of a weight W [N, K], its nonzero tile-columns, and the
same for W^T, as int32 tensors on W's device (no host sync to build). A kernels.Linear
owns its layout in buffers, computed by `sync_layer` when the mask changes (the pruner
calls kernels.sync_block_layouts when it sets the final mask) and copied in place after
that, so a CUDA graph that reads them stays valid. The functional entry point
kernels.block_sparse_linear builds one per call instead, cached by the weight's version.
"""
from __future__ import annotations

import weakref

import torch

from . import ops
from ._common import autocast_inputs, next_pow2
from .reference import tile_mask

MAX_TILE = 128
CPU_MIN_TILE = 32        # smaller tiles cost more in per-call overhead than they skip


def tile_for(block_size: int) -> int:
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (cfg.pruning_block_size)")
    return max(16, min(MAX_TILE, next_pow2(block_size)))


def cpu_tile_for(block_size: int) -> int:
    return block_size * max(1, -(-CPU_MIN_TILE // block_size))


class Layout:
    """Nonzero tiles of W [N, K]: for tile-row r, `cols[r, :count[r]]` are its nonzero
    tile-columns in ascending order (the zero ones follow); `t_count`/`t_cols` the same for
    W^T. All int32 on W's device, computed with no host sync."""

    def __init__(self, weight: torch.Tensor, tile: int):
        mask = tile_mask(weight, tile)                    # [N/tile, K/tile]
        self.tile = tile
        self.mask = mask
        self.count, self.cols = self._lists(mask)
        self.t_count, self.t_cols = self._lists(mask.t())
        self._density = None          # measured on the first density() call

    @staticmethod
    def _lists(mask):
        count = mask.sum(dim=1, dtype=torch.int32)
        # a stable sort of "is zero" puts the nonzero columns first, in order, with no sync
        cols = torch.argsort((~mask).to(torch.int8), dim=1, stable=True).to(torch.int32)
        return count, cols.contiguous()

    def tensors(self) -> tuple:
        return self.count, self.cols, self.t_count, self.t_cols

    def density(self) -> float:
        """Fraction of nonzero tiles; one host sync on the first call, then kept (a layout
        is never updated: a changed weight gets a new one)."""
        if self._density is None:
            self._density = self.mask.float().mean().item()
        return self._density


_LAYOUTS: dict[int, tuple] = {}


def layout(weight: torch.Tensor, tile: int) -> Layout:
    """The Layout of weight for the functional entry point (kernels.block_sparse_linear),
    cached while the weight is unchanged (same tensor, same version counter: an optimizer
    step or p.mul_(mask) bumps it). Eager code only: a module's layout lives in its buffers
    (kernels.sync_block_layouts). Writes through `weight.data` do not bump the version:
    code that revives zero blocks that way must call clear_cache()."""
    key = id(weight)
    hit = _LAYOUTS.get(key)
    if hit is not None:
        ref, version, t, lay = hit
        if ref() is weight and version == weight._version and t == tile:
            return lay
    lay = Layout(weight, tile)
    if len(_LAYOUTS) > 512:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (weakref.ref(weight), weight._version, tile, lay)
    return lay


def clear_cache() -> None:
    """Forget every cached layout of the functional entry point."""
    _LAYOUTS.clear()


def module_forward(layer, x, route):
    """A synced kernels.Linear's forward (its layout in its buffers)."""
    x, weight, bias = autocast_inputs(x, layer.weight, layer.bias)
    return ops.block_sparse_linear(
        x, weight, bias, layer.block_count, layer.block_cols, layer.block_t_count,
        layer.block_t_cols, layer.block_tile, layer.block_density,
        ops.needs_grad(x, weight, bias), layer.block_sampled_dw, route)


@torch.no_grad()
def sync_layer(layer, route: str, sampled_dw: bool) -> None:
    """Compute layer's tile layout from its weight's zeros into its buffers (in place when
    they exist, so their addresses stay fixed) and set its routing attributes."""
    b = layer.sparse_block_size
    tile = tile_for(b) if route == "triton" else cpu_tile_for(b)
    lay = Layout(layer.weight, tile)
    for name, t in zip(("block_count", "block_cols", "block_t_count", "block_t_cols"),
                       lay.tensors()):
        have = getattr(layer, name, None)
        if have is not None and have.shape == t.shape and have.device == t.device:
            have.copy_(t)
        else:
            layer.register_buffer(name, t, persistent=False)
    density = lay.density()
    layer.block_tile, layer.block_density = tile, density
    layer.block_sampled_dw = bool(sampled_dw)
    layer.block_active = density < 1.0

