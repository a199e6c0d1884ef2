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

The same pieces serve ImageNet-layout folders (DecodedBatches, CONFIG_RESNET50_DECODE_GPU):
DataLoader workers only read each file's bytes, in lib/data.StepBatchSampler's order; the
batch is decoded with torchvision.io.decode_jpeg on the device, and each image's
RandomResizedCrop box (torchvision's rule, drawn from the (seed, epoch, step) generator),
flip and normalisation are applied there.
"""
from __future__ import annotations

import contextlib
import math
import queue
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lib.data import StepBatchSampler, epoch_permutation


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


def step_generator(seed: int, epoch: int, step: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(seed, epoch, step))


def normalise(x, scale: float, mean: torch.Tensor, std: torch.Tensor, channels_last: bool):
    """(x * scale - mean) / std in float32 (mean, std shaped [1, C, 1, 1]), NHWC if asked:
    ToTensor + Normalize of a batch."""
    x = (x.float() * scale - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def channel_stats(mean, std, c: int, device) -> tuple:
    shape = (1, c, 1, 1)
    return (torch.tensor(mean[:c], device=device).view(shape),
            torch.tensor(std[:c], device=device).view(shape))


class DeviceBatches:
    """The split on `device`; batch(indices, seed, epoch, step) -> (images, labels)."""

    def __init__(self, src: Source, device, channels_last: bool = False):
        self.device = torch.device(device)
        self.x = src.images.to(self.device)
        self.y = src.labels.to(self.device, torch.long)
        self.n, self.c, self.h, self.w = self.x.shape
        self.src, self.channels_last = src, channels_last
        self.mean, self.std = channel_stats(src.mean, src.std, self.c, self.device)
        self.ar_h = torch.arange(self.h, device=self.device)
        self.ar_w = torch.arange(self.w, device=self.device)

    def offsets(self, b: int, seed: int, epoch: int, step: int):
        """Each sample's crop corner (top, left) in [0, 2 pad] and whether it is flipped."""
        g = step_generator(seed, epoch, step, self.device)
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
        return normalise(x, self.src.scale, self.mean, self.std, self.channels_last), self.y[idx]

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


# ---------------------------------------------------------------------------
# ImageNet-layout folders: the files' bytes read by workers, decoded and augmented on device

SCALE, RATIO, ATTEMPTS = (0.08, 1.0), (3 / 4, 4 / 3), 10   # RandomResizedCrop's defaults


def crop_draws(b: int, seed: int, epoch: int, step: int) -> dict:
    """The random numbers of step `step`'s b images, on the CPU: per image ATTEMPTS area
    fractions and log aspect ratios, two position uniforms and the flip. They do not depend
    on the image sizes, so a rank's or micro-step's share is a slice of the global batch's."""
    g = step_generator(seed, epoch, step)
    f64 = dict(dtype=torch.float64)
    lo, hi = math.log(RATIO[0]), math.log(RATIO[1])
    return {"area": torch.empty(b, ATTEMPTS, **f64).uniform_(*SCALE, generator=g),
            "logr": torch.empty(b, ATTEMPTS, **f64).uniform_(lo, hi, generator=g),
            "pos": torch.rand(b, 2, generator=g, **f64),
            "flip": torch.rand(b, generator=g) < 0.5}


def crop_boxes(draws: dict, sizes) -> torch.Tensor:
    """[b, 4] int64 boxes (top, left, height, width) for images of sizes [(H, W), ...] by
    the rule of torchvision's RandomResizedCrop.get_params: the first attempt whose box
    (area fraction x H x W at the aspect ratio, rounded) fits, at a uniform position; none
    fitting, the centre crop of the image clamped to the ratio range."""
    hw = torch.tensor([list(s) for s in sizes], dtype=torch.float64)
    H, W = hw[:, :1], hw[:, 1:]
    target, ar = H * W * draws["area"], torch.exp(draws["logr"])
    w, h = torch.round(torch.sqrt(target * ar)), torch.round(torch.sqrt(target / ar))
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = ok.to(torch.uint8).argmax(1, keepdim=True)         # the first that fits
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], ok.any(1)
    H, W = H[:, 0], W[:, 0]
    top = torch.floor(draws["pos"][:, 0] * (H - h + 1))
    left = torch.floor(draws["pos"][:, 1] * (W - w + 1))
    # the fallback: the whole image, or its centre at the nearest allowed ratio
    in_ratio = W / H
    fw = torch.where(in_ratio > RATIO[1], torch.round(H * RATIO[1]), W)
    fh = torch.where(in_ratio < RATIO[0], torch.round(W / RATIO[0]), H)
    box = torch.stack([torch.where(found, top, torch.div(H - fh, 2, rounding_mode="floor")),
                       torch.where(found, left, torch.div(W - fw, 2, rounding_mode="floor")),
                       torch.where(found, h, fh), torch.where(found, w, fw)], 1)
    return box.long()


def resized_crops(images, boxes: torch.Tensor, size: int, out: torch.Tensor) -> torch.Tensor:
    """out[k] = image k's box, resized to size x size bilinearly with antialiasing, in float
    (images are uint8 [3, H, W] of any sizes; one call per image)."""
    for k, (img, (t, l, h, w)) in enumerate(zip(images, boxes.tolist())):
        crop = img[None, :, t:t + h, l:l + w].float()
        out[k] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)[0]
    return out


def collate_bytes(items):
    """A DataLoader batch of (file bytes, label): the byte tensors as a list (their lengths
    differ), the labels as one tensor."""
    return [x for x, _ in items], torch.tensor([y for _, y in items])


class DecodedBatches:
    """Training batches of an image folder made on `device`: `files` maps an index to (the
    file's bytes as a uint8 tensor, label) (lib/vision.EncodedFolder); DataLoader workers
    read them in lib/data.StepBatchSampler's order, and each batch is decoded with
    torchvision.io.decode_jpeg on the device, cropped by crop_boxes, resized to size x size
    (rounded to uint8 levels, as torchvision's RandomResizedCrop returns a uint8 image),
    flipped and normalised. loader() is DeviceBatches.loader's: the same micro-batches of
    the same steps, with the draws made for the whole global batch."""

    def __init__(self, files, size: int, mean, std, device, channels_last: bool = False,
                 ahead: bool | None = None):
        self.files, self.size, self.channels_last = files, size, channels_last
        self.device = torch.device(device)
        self.mean, self.std = channel_stats(mean, std, 3, self.device)
        cuda = self.device.type == "cuda"
        self.ahead = cuda if ahead is None else ahead       # decode in a thread (loader)
        self.stream = torch.cuda.Stream(self.device) if cuda else None

    def decode(self, raw: list) -> list:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
        rgb = ImageReadMode.RGB
        try:
            return decode_jpeg(raw, mode=rgb, device=self.device)
        except RuntimeError:
            # a file the device decoder refuses (CMYK, a PNG named .JPEG: ImageNet has a
            # few dozen) fails the whole batch: decode file by file, those on the CPU
            out = []
            for r in raw:
                try:
                    out.append(decode_jpeg(r, mode=rgb, device=self.device))
                except RuntimeError:
                    out.append(decode_image(r, mode=rgb).to(self.device))
            return out

    def augment(self, images: list, draws: dict) -> torch.Tensor:
        """Decoded uint8 images -> the normalised float batch, for the draws' boxes and flips."""
        boxes = crop_boxes(draws, [tuple(im.shape[-2:]) for im in images])
        x = torch.empty(len(images), 3, self.size, self.size, device=self.device)
        x = resized_crops(images, boxes, self.size, x).round_().clamp_(0, 255)
        flip = draws["flip"].to(self.device)[:, None, None, None]
        return normalise(torch.where(flip, x.flip(-1), x), 1.0 / 255, self.mean, self.std,
                         self.channels_last)

    def batch(self, raw: list, labels, seed: int, epoch: int, step: int, b: int = 0,
              part: slice = slice(None)):
        """raw: the bytes of `part` of step `step`'s b images (b = len(raw) by default)."""
        draws = {k: v[part] for k, v in crop_draws(b or len(raw), seed, epoch, step).items()}
        x = self.augment(self.decode(raw), draws)
        return x, labels.to(self.device, non_blocking=True)

    def reader(self, cfg, epoch: int, start_step: int, rank: int = 0, world: int = 1):
        """(bytes, labels) micro-batches of steps [start_step, steps of the epoch), read by
        cfg.num_workers DataLoader workers."""
        sampler = StepBatchSampler(len(self.files), cfg.batch_size, cfg.seed, epoch,
                                   start_step, rank, world, cfg.grad_accum)
        return DataLoader(self.files, batch_sampler=sampler, num_workers=cfg.num_workers,
                          collate_fn=collate_bytes, prefetch_factor=4 if cfg.num_workers else None,
                          generator=torch.Generator().manual_seed(epoch))

    def made(self, cfg, epoch: int, start_step: int, rank: int, world: int):
        accum, bsz = cfg.grad_accum, cfg.batch_size
        micro = bsz // (world * accum)
        for k, (raw, labels) in enumerate(self.reader(cfg, epoch, start_step, rank, world)):
            lo = (rank * accum + k % accum) * micro
            yield self.batch(raw, labels, cfg.seed, epoch, start_step + k // accum, bsz,
                             slice(lo, lo + micro))

    def loader(self, cfg, epoch: int, start_step: int, rank: int = 0, world: int = 1):
        """On a GPU, a thread decodes up to two batches ahead on a side stream, so the
        host's part of decoding (nvJPEG's Huffman stage can run there) overlaps the
        training step's launches; the batches and their order are the same either way."""
        if not self.ahead:
            yield from self.made(cfg, epoch, start_step, rank, world)
            return
        cuda = self.stream is not None
        q, stop = queue.Queue(maxsize=2), threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        def produce():
            try:
                with torch.cuda.device(self.device) if cuda else contextlib.nullcontext(), \
                        torch.cuda.stream(self.stream) if cuda else contextlib.nullcontext():
                    for x, y in self.made(cfg, epoch, start_step, rank, world):
                        done = torch.cuda.Event() if cuda else None
                        if cuda:
                            done.record(self.stream)
                        if not put((x, y, done)):
                            return
                put(None)
            except BaseException as e:      # raised in the training loop instead
                put(e)

        thread = threading.Thread(target=produce, name="gpu-decode", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                x, y, done = item
                if cuda:
                    main = torch.cuda.current_stream(self.device)
                    main.wait_event(done)
                    x.record_stream(main)
                    y.record_stream(main)
                yield x, y
        finally:
            stop.set()
            thread.join(timeout=30)


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
