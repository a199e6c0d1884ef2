"""Deterministic, resumable data order.

Every epoch has its own permutation, seeded by (seed, epoch). Step s of an epoch takes
the global batch perm[s*B:(s+1)*B]; rank r of W takes its slice of that, and each
accumulation micro-step a slice of the rank's. So the data position is just (epoch, step),
a resumed run sees exactly the batches it would have seen, and 1 GPU and N GPUs with the
same global batch see the same samples per optimizer step.

Random augmentation is seeded per (seed, epoch, index) inside the dataset wrapper, so it
does not depend on worker count, worker order or where a run was resumed.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class SeededDataset(Dataset):
    """Wraps a map-style dataset; index e*N + i means sample i in epoch e, and the
    sample's random transforms run under a torch RNG seeded from (seed, e, i)."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed, self.n = base, seed, len(base)

    def __len__(self):
        return self.n

    def __getitem__(self, g: int):
        epoch, i = divmod(int(g), self.n)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue a lazy CUDA seed
            # (with a captured traceback), ~1.7 ms per sample on torch 2.14
            torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.base[i]


class StepBatchSampler(Sampler):
    """Yields micro-batches of global indices for steps [start_step, steps_per_epoch)."""

    def __init__(self, n, batch_size, seed, epoch, start_step=0, rank=0, world=1, accum=1):
        per_rank, rem = divmod(batch_size, world * accum)
        if rem or per_rank == 0:
            raise ValueError(f"batch_size={batch_size} must be a multiple of GPUs x grad_accum "
                             f"= {world} x {accum}; change batch_size or grad_accum")
        self.n, self.B, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start, self.rank, self.world, self.accum, self.micro = start_step, rank, world, accum, per_rank
        self.steps = n // batch_size
        if self.steps == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the training set "
                             f"({n} samples); lower batch_size")

    def __len__(self):
        return (self.steps - self.start) * self.accum

    def __iter__(self):
        perm = epoch_permutation(self.n, self.seed, self.epoch) + self.epoch * self.n
        for s in range(self.start, self.steps):
            batch = perm[s * self.B:(s + 1) * self.B]
            mine = batch[self.rank * self.micro * self.accum:(self.rank + 1) * self.micro * self.accum]
            for a in range(self.accum):
                yield mine[a * self.micro:(a + 1) * self.micro].tolist()


def train_loader(ds: SeededDataset, cfg, epoch, start_step, rank, world) -> DataLoader:
    sampler = StepBatchSampler(len(ds), cfg.batch_size, cfg.seed, epoch, start_step,
                               rank, world, cfg.grad_accum)
    # Own generator: creating a loader must not draw from the global torch RNG, or a
    # resumed run (which creates its loader mid-epoch) would drift from an uninterrupted one.
    return DataLoader(ds, batch_sampler=sampler, num_workers=cfg.num_workers,
                      pin_memory=cfg.device == "cuda", generator=torch.Generator().manual_seed(epoch))


def eval_loader(ds: Dataset, cfg, rank, world) -> DataLoader:
    """Sequential, each rank a strided shard; sums are all-reduced by the trainer."""
    idx = list(range(rank, len(ds), world))
    micro = max(1, cfg.batch_size // (world * cfg.grad_accum))
    if cfg.eval_batches:
        idx = idx[:cfg.eval_batches * micro]
    return DataLoader(torch.utils.data.Subset(ds, idx), batch_size=micro, shuffle=False,
                      num_workers=cfg.num_workers, pin_memory=cfg.device == "cuda",
                      generator=torch.Generator().manual_seed(0))
