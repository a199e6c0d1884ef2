"""Handwritten digits for LeNet-5.

- digits (default): scikit-learn's load_digits, 1,797 real 8x8 digits written by 43
  people, shipped inside the package so it works offline. Upsampled to 32x32 (bilinear)
  and split 80/20 by a fixed permutation (the split does not depend on the run seed).
- mnist: torchvision's MNIST under <data_dir>/MNIST, padded 28->32 like the original
  LeNet; downloaded only when CONFIG_DATA_DOWNLOAD (--data-download) is set.
See docs/data.md for why.
"""
import os

import torch

from lib.runconfig import ConfigError


def digits():
    from lib import digits as shipped
    return shipped.split(*shipped.images(size=32))


def mnist(data_dir: str, download: bool):
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.Pad(2), transforms.ToTensor(),
                             transforms.Normalize((0.1307,), (0.3081,))])
    try:
        train = datasets.MNIST(data_dir, train=True, transform=tf, download=download)
        test = datasets.MNIST(data_dir, train=False, transform=tf, download=download)
    except RuntimeError as e:
        raise ConfigError(f"MNIST not found under {os.path.join(data_dir, 'MNIST')} ({e}); put it "
                          f"there, set CONFIG_DATA_DIR / --data-dir, or enable CONFIG_DATA_DOWNLOAD "
                          f"(--data-download) on a machine with network") from None
    return train, test


def build_datasets(cfg):
    if cfg.dataset == "digits":
        return digits()
    if cfg.dataset == "mnist":
        return mnist(cfg.data_dir, cfg.data_download)
    raise ConfigError(f"dataset={cfg.dataset!r} is not a LeNet-5 data set; choose digits or mnist "
                      f"(CONFIG_LENET5_DATASET)")


def example_batch(cfg, n):
    return torch.randn(n, 1, 32, 32), torch.randint(0, 10, (n,))
