"""Image batches made on the device: the whole training split uploaded once, and each batch's
random crop (zero padding), horizontal flip and normalisation done for the batch at once.

For data sets that fit in GPU memory (CIFAR-10/100: 150 MB as uint8; the shipped digits),
this replaces per-image augmentation in DataLoader workers, which bounds a ResNet's training
rate by the CPU (~3k images/s per worker). The augmentation of step s of epoch e draws from
a generator seeded by (seed, epoch, step), so a batch is a pure function of the run's
position and a resumed run sees exactly the batches it would have seen (the same rule as
lib/data.py's per-sample seeding; the random streams differ from the CPU path's, so the
choice is part of a run's identity: CONFIG_DATA_ON_GPU).

A source is (images [N, C, H, W], labels [N], scale, mean, std, pad, fill, flip): uint8
images with scale 1/255 (CIFAR's torchvision arrays), or float images with scale 1 (the
digits). Normalisation is (x * scale - mean) / std per channel, after cropping from a copy
padded with `fill` (in the stored units), as torchvision's RandomCrop(padding) + ToTensor +
Normalize do.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lib.data import epoch_permutation


@dataclass
class Source:
    images: torch.Tensor          # [N, C, H, W], uint8 or float
    labels: torch.Tensor          # [N] int64
    scale: float = 1.0 / 255
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    pad: int = 4
    fill: float = 0.0
    flip: bool = True


def step_seed(seed: int, epoch: int, step: int) -> int:
    return ((seed * 1_000_003 + epoch) * 10_000_019 + step) % (2**63 - 1)


class DeviceBatches:
    """The split on `device`; batch(indices, seed, epoch, step) -> (images, labels)."""

    def __init__(self, src: Source, device, channels_last: bool = False):
        self.device = torch.device(device)
        self.x = src.images.to(self.device)
        self.y = src.labels.to(self.device, torch.long)
        self.n, self.c, self.h, self.w = self.x.shape
        self.src, self.channels_last = src, channels_last
        shape = (1, self.c, 1, 1)
        self.mean = torch.tensor(src.mean[:self.c], device=self.device).view(shape)
        self.std = torch.tensor(src.std[:self.c], device=self.device).view(shape)
        self.ar_h = torch.arange(self.h, device=self.device)
        self.ar_w = torch.arange(self.w, device=self.device)

    def offsets(self, b: int, seed: int, epoch: int, step: int):
        """Each sample's crop corner (top, left) in [0, 2 pad] and whether it is flipped."""
        g = torch.Generator(device=self.device).manual_seed(step_seed(seed, epoch, step))
        p = self.src.pad
        corner = torch.randint(0, 2 * p + 1, (2, b), generator=g, device=self.device)
        flip = (torch.rand(b, generator=g, device=self.device) < 0.5) & self.src.flip
        return corner[0], corner[1], flip

    def batch(self, idx, seed: int, epoch: int, step: int, part: slice = slice(None)):
        """The augmented images of samples idx (global indices, taken mod N): the crop
        corners and flips are drawn for the whole of idx, then `part` of it is made, so a
        micro-batch or a rank's share gets what it would get in the whole batch."""
        idx = torch.as_tensor(idx, device=self.device) % self.n
        top, left, flip = (t[part] for t in self.offsets(len(idx), seed, epoch, step))
        idx = idx[part]
        x = self.x[idx]
        b, p = len(idx), self.src.pad
        if p:
            x = F.pad(x.float(), (p, p, p, p), value=float(self.src.fill))
        cols = torch.where(flip[:, None], self.w - 1 - self.ar_w[None, :], self.ar_w[None, :])
        rows = (top[:, None] + self.ar_h[None, :])[:, None, :, None]
        cols = (left[:, None] + cols)[:, None, None, :]
        chan = torch.arange(self.c, device=self.device)[None, :, None, None]
        x = x[torch.arange(b, device=self.device)[:, None, None, None], chan, rows, cols]
        x = (x.float() * self.src.scale - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]


    def loader(self, cfg, epoch: int, start_step: int, rank: int = 0, world: int = 1):
        """Micro-batches (images, labels) of steps [start_step, steps of the epoch), in the
        order and split of lib/data.StepBatchSampler: step s takes perm[s*B:(s+1)*B] of the
        epoch's permutation, rank r its share, each accumulation micro-step a slice of that.
        The augmentation of step s is drawn for the whole global batch, so 1 GPU and N GPUs
        with the same global batch see the same images."""
        bsz, accum = cfg.batch_size, cfg.grad_accum
        micro = bsz // (world * accum)
        perm = epoch_permutation(self.n, cfg.seed, epoch).to(self.device)
        for s in range(start_step, self.n // bsz):
            idx = perm[s * bsz:(s + 1) * bsz]
            for a in range(accum):
                lo = (rank * accum + a) * micro
                yield self.batch(idx, cfg.seed, epoch, s, slice(lo, lo + micro))


def reference_batch(src: Source, idx, top, left, flip):
    """One image at a time, the way torchvision's transforms do it: the reference the tests
    compare DeviceBatches with."""
    out = []
    mean = torch.tensor(src.mean[:src.images.shape[1]]).view(-1, 1, 1)
    std = torch.tensor(src.std[:src.images.shape[1]]).view(-1, 1, 1)
    h, w = src.images.shape[-2:]
    for i, t, l, f in zip(idx, top.tolist(), left.tolist(), flip.tolist()):
        img = F.pad(src.images[i].float(), (src.pad,) * 4, value=float(src.fill))
        img = img[:, t:t + h, l:l + w]
        if f:
            img = img.flip(-1)
        out.append((img * src.scale - mean) / std)
    return torch.stack(out)
