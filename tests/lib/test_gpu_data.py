"""Batched device-side augmentation (lib/gpu_data.py) equals the per-image pipeline for the
same crop corners and flips, and is a pure function of (seed, epoch, step)."""
import pytest
import torch

from lib import gpu_data

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def source(n=64, c=3, h=32, w=32):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return gpu_data.Source(imgs, torch.arange(n) % 10, mean=CIFAR_MEAN, std=CIFAR_STD)


def test_batch_equals_the_per_image_pipeline():
    src = source()
    dev = gpu_data.DeviceBatches(src, "cpu")
    idx = torch.tensor([5, 63, 0, 17, 17, 130])           # global indices wrap round N
    x, y = dev.batch(idx, seed=3, epoch=2, step=7)
    top, left, flip = dev.offsets(len(idx), 3, 2, 7)
    ref = gpu_data.reference_batch(src, (idx % 64).tolist(), top, left, flip)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)
    assert y.tolist() == [5, 3, 0, 7, 7, 2]
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32


def test_a_batch_is_a_pure_function_of_the_position():
    dev = gpu_data.DeviceBatches(source(), "cpu")
    idx = torch.arange(32)
    a, _ = dev.batch(idx, 1, 0, 5)
    torch.manual_seed(123)                                  # the global RNG plays no part
    b, _ = dev.batch(idx, 1, 0, 5)
    c, _ = dev.batch(idx, 1, 0, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_corners_and_flips_cover_the_range():
    dev = gpu_data.DeviceBatches(source(), "cpu")
    top, left, flip = dev.offsets(4000, 1, 0, 0)
    assert set(top.tolist()) == set(range(9)) == set(left.tolist())
    assert 0.45 < flip.float().mean().item() < 0.55
    noflip = gpu_data.DeviceBatches(gpu_data.Source(source().images, source().labels, flip=False), "cpu")
    assert not noflip.offsets(100, 1, 0, 0)[2].any()


def test_float_images_and_channels_last():
    src = gpu_data.Source(torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long), scale=1.0,
                          fill=-1.0, flip=False)
    dev = gpu_data.DeviceBatches(src, "cpu", channels_last=True)
    x, _ = dev.batch(torch.arange(8), 1, 0, 0)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.min() >= -1.0 and x.max() <= 1.0      # padding shows the fill value, nothing else


def test_loader_splits_like_the_sampler_and_does_not_depend_on_the_split():
    from types import SimpleNamespace
    from lib import data
    dev = gpu_data.DeviceBatches(source(n=64), "cpu")
    one = SimpleNamespace(batch_size=16, grad_accum=1, seed=2)
    four = SimpleNamespace(batch_size=16, grad_accum=2, seed=2)
    whole = list(dev.loader(one, epoch=1, start_step=0))
    assert len(whole) == 4
    # the sampler's order: step s's labels are the labels of perm[s*16:(s+1)*16]
    perm = data.epoch_permutation(64, 2, 1)
    assert whole[2][1].tolist() == (perm[32:48] % 10).tolist()
    # two ranks x two micro-steps of 4 reassemble the same images as one process
    parts = [list(dev.loader(four, 1, 0, rank=r, world=2)) for r in (0, 1)]
    step0 = torch.cat([parts[0][0][0], parts[0][1][0], parts[1][0][0], parts[1][1][0]])
    assert torch.equal(step0, whole[0][0])
    # resuming at step 3 gives step 3 as an uninterrupted epoch does
    assert torch.equal(next(dev.loader(one, 1, 3))[0], whole[3][0])


def test_device_source_of_the_cifar_pipeline_matches_torchvision():
    """A CIFAR-shaped torchvision dataset: the device batch for given corners and flips is
    what RandomCrop(32, 4) + flip + ToTensor + Normalize make of the same image."""
    import numpy as np
    from torchvision import transforms
    from lib import vision

    class FakeCifar:
        data = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
        targets = list(range(10))
    src = vision.device_source("cifar10", FakeCifar())
    dev = gpu_data.DeviceBatches(src, "cpu")
    idx = torch.arange(10)
    x, y = dev.batch(idx, 1, 0, 0)
    top, left, flip = dev.offsets(10, 1, 0, 0)
    _, _, mean, std = vision.CIFAR["cifar10"]
    norm = transforms.Normalize(mean, std)
    for i in range(10):
        img = transforms.functional.to_tensor(FakeCifar.data[i])
        img = transforms.functional.pad(img, 4)[:, top[i]:top[i] + 32, left[i]:left[i] + 32]
        if flip[i]:
            img = transforms.functional.hflip(img)
        torch.testing.assert_close(x[i], norm(img), rtol=0, atol=1e-5)
    assert y.tolist() == list(range(10))


# --- ImageNet-layout folders decoded on the device (DecodedBatches) --------------------------

def jpeg_folder(root, classes=3, per_class=5, seed=0):
    """A tiny ImageFolder of JPEGs of assorted sizes (smooth colours plus noise)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
            base = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((16, 16, 1)))[:h, :w]
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"im{i}.JPEG", quality=90)
    return root


def decoded(root, size=16):
    from lib import vision
    return gpu_data.DecodedBatches(vision.EncodedFolder(str(root)), size, IMAGENET_MEAN,
                                   IMAGENET_STD, "cpu")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_the_reader_gives_each_files_bytes_in_the_samplers_order(tmp_path):
    from types import SimpleNamespace
    from torchvision import datasets
    from lib import data
    root = jpeg_folder(tmp_path / "train")
    dev = decoded(root)
    assert dev.files.samples == datasets.ImageFolder(str(root)).samples
    cfg = SimpleNamespace(batch_size=6, grad_accum=1, seed=4, num_workers=2)
    got = list(dev.reader(cfg, epoch=1, start_step=0))
    want = list(data.StepBatchSampler(15, 6, 4, 1))
    assert len(got) == len(want) == 2
    for (raw, labels), idx in zip(got, want):
        paths = [dev.files.samples[i % 15] for i in idx]
        assert [bytes(r.numpy()) for r in raw] == [open(p, "rb").read() for p, _ in paths]
        assert labels.tolist() == [c for _, c in paths]


def test_crop_boxes_follow_torchvisions_rule():
    from torchvision import transforms
    sizes = [(375, 500), (500, 333), (37, 41), (10, 1000), (1000, 10)]
    draws = gpu_data.crop_draws(2000 * len(sizes), 1, 0, 0)
    boxes = gpu_data.crop_boxes(draws, sizes * 2000)
    hw = torch.tensor(sizes * 2000)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= hw[:, 0]).all() and (left + w <= hw[:, 1]).all()
    # images too thin for any attempt take torchvision's fallback, the same box exactly
    for k, (H, W) in enumerate(sizes[3:], 3):
        tv = transforms.RandomResizedCrop.get_params(torch.zeros(1, H, W), [0.08, 1.0], [3 / 4, 4 / 3])
        assert boxes[k].tolist() == list(tv)
    # the others: the area fraction and aspect ratio torchvision draws, to sampling noise
    torch.manual_seed(0)
    for k, (H, W) in enumerate(sizes[:2]):
        ours = boxes[k::len(sizes)].double()
        tv = torch.tensor([transforms.RandomResizedCrop.get_params(torch.zeros(1, H, W),
                           [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)]).double()
        for b in (ours, tv):
            area = b[:, 2] * b[:, 3] / (H * W)
            assert area.min() >= 0.079 and area.max() <= 1.0
        a_ours, a_tv = (b[:, 2] * b[:, 3] / (H * W) for b in (ours, tv))
        assert abs(a_ours.mean() - a_tv.mean()) < 0.03
        r_ours, r_tv = ((b[:, 3] / b[:, 2]).log() for b in (ours, tv))
        assert abs(r_ours.mean() - r_tv.mean()) < 0.03
        assert abs((ours[:, 0] / H).mean() - (tv[:, 0] / H).mean()) < 0.03


def test_the_device_arithmetic_equals_torchvisions_transforms_for_the_same_boxes():
    """Crop, flip and normalise of uint8 images against RandomResizedCrop's functional form,
    hflip, ToTensor and Normalize, box by box: exact where no resampling happens (a box of the
    output's size: the crop and flip are uint8 copies), within one uint8 level where the box
    is resized (bilinear antialiased, float then rounded here; torchvision's uint8 kernel
    rounds on its own), normalisation to float rounding (1e-5)."""
    from torchvision import transforms
    import torchvision.transforms.functional as TF
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
              for h, w in [(40, 52), (33, 29), (64, 48), (16, 20), (25, 70), (16, 16)]]
    dev = gpu_data.DecodedBatches([], 16, IMAGENET_MEAN, IMAGENET_STD, "cpu")
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    draws = gpu_data.crop_draws(len(images), 3, 1, 2)
    draws["flip"] = torch.tensor([True, False, True, False, True, True])
    boxes = gpu_data.crop_boxes(draws, [tuple(im.shape[-2:]) for im in images])
    x = dev.augment(images, draws)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    for k, (img, (t, l, h, w)) in enumerate(zip(images, boxes.tolist())):
        ref = TF.resized_crop(img, t, l, h, w, [16, 16], antialias=True)
        if draws["flip"][k]:
            ref = TF.hflip(ref)
        levels = (x[k] * std + mean) * 255
        torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)  # uint8 levels
        assert (levels.round() - ref.float()).abs().max() <= 1, k
        torch.testing.assert_close(norm(levels.round() / 255), x[k], rtol=0, atol=1e-5)
    # boxes of the output's size: no resampling, so the crop and flip are exact
    draws["area"][:] = 16 * 16 / torch.tensor([im[0].numel() for im in images]).double()[:, None]
    draws["logr"][:] = 0.0
    boxes = gpu_data.crop_boxes(draws, [tuple(im.shape[-2:]) for im in images])
    assert (boxes[:, 2:] == 16).all()
    x = dev.augment(images, draws)
    for k, (img, (t, l, h, w)) in enumerate(zip(images, boxes.tolist())):
        ref = img[:, t:t + 16, l:l + 16]
        ref = ref.flip(-1) if draws["flip"][k] else ref
        torch.testing.assert_close(x[k], norm(TF.to_tensor(ref.permute(1, 2, 0).numpy())),
                                   rtol=0, atol=1e-5)


def test_decoded_batches_are_a_pure_function_of_the_position_and_resume(tmp_path):
    from types import SimpleNamespace
    root = jpeg_folder(tmp_path / "train", classes=2, per_class=8)
    dev = decoded(root)
    one = SimpleNamespace(batch_size=4, grad_accum=1, seed=2, num_workers=0)
    whole = list(dev.loader(one, epoch=3, start_step=0))
    assert len(whole) == 4 and whole[0][0].shape == (4, 3, 16, 16)
    again = list(dev.loader(one, epoch=3, start_step=0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole, again))
    # resumed at step 2 (a fresh reader, workers this time): the steps it would have seen
    resumed = list(dev.loader(SimpleNamespace(**{**vars(one), "num_workers": 2}), 3, 2))
    assert len(resumed) == 2
    for (x, y), (wx, wy) in zip(resumed, whole[2:]):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    # two ranks x two micro-steps reassemble one process's batch: the draws are global
    split = SimpleNamespace(batch_size=4, grad_accum=2, seed=2, num_workers=0)
    parts = [list(dev.loader(split, 3, 0, rank=r, world=2)) for r in (0, 1)]
    step0 = torch.cat([parts[0][0][0], parts[0][1][0], parts[1][0][0], parts[1][1][0]])
    assert torch.equal(step0, whole[0][0])
    assert not torch.equal(list(dev.loader(one, 4, 0))[0][0], whole[0][0])   # next epoch


def test_cpu_decode_of_the_bytes_is_pils(tmp_path):
    """The decode step on the CPU (libjpeg-turbo through torchvision) gives PIL's pixels, so
    the two paths differ only in the resize arithmetic; nvJPEG on the GPU may differ from
    both by an IDCT rounding (checked on the GPU by scripts/bench/vision.py's run only)."""
    import numpy as np
    from PIL import Image
    root = jpeg_folder(tmp_path / "train", classes=1, per_class=4)
    dev = decoded(root)
    raw = [dev.files[i][0] for i in range(4)]
    for (path, _), img in zip(dev.files.samples, dev.decode(raw)):
        pil = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(img, pil)


def test_decoding_ahead_in_a_thread_keeps_the_batches_and_stops_cleanly(tmp_path):
    """The GPU's read-ahead thread (here on the CPU): the same batches in the same order, an
    error inside it reaches the training loop, and leaving mid-epoch ends the thread."""
    import threading
    from types import SimpleNamespace
    root = jpeg_folder(tmp_path / "train", classes=2, per_class=8)
    plain, ahead = decoded(root), decoded(root)
    ahead.ahead = True
    cfg = SimpleNamespace(batch_size=2, grad_accum=1, seed=5, num_workers=0)
    want, got = list(plain.loader(cfg, 0, 1)), list(ahead.loader(cfg, 0, 1))
    assert len(got) == len(want) == 7
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))
    it = ahead.loader(cfg, 0, 0)
    next(it)
    it.close()                                   # the trainer stops at max_steps mid-epoch
    assert not [t for t in threading.enumerate() if t.name == "gpu-decode"]
    ahead.decode = lambda raw: (_ for _ in ()).throw(RuntimeError("nvjpeg says no"))
    with pytest.raises(RuntimeError, match="nvjpeg says no"):
        list(ahead.loader(cfg, 0, 0))
