"""Batched device-side augmentation (lib/gpu_data.py) equals the per-image pipeline for the
same crop corners and flips, and is a pure function of (seed, epoch, step)."""
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
