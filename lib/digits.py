"""scikit-learn's handwritten digits: 1,797 real 8x8 digits written by 43 people, shipped
inside the scikit-learn package, so every machine has them offline. The real data of the
CPU runs and tests of lenet5, resnet18 and resnet50 (docs/data.md).

    x, y = digits.images(size=32)            # [1797, 1, 32, 32] standardised, [1797] labels
    train, test = digits.split(x, y)         # 80/20 TensorDatasets, fixed split

The split is a fixed permutation (seed 0): it does not depend on the run seed.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from lib.runconfig import ConfigError


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 8, 8] float64 in 0..16, target [N] int), exactly load_digits()'s.

    Read straight from sklearn/datasets/data/digits.csv.gz (the file load_digits reads):
    importing sklearn.datasets pulls in scipy, 2-3 s per process on the 2-core CI host,
    and every train.py subprocess of the tests would pay it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ConfigError("the digits data set ships with scikit-learn, which is not installed; "
                          "`pip install scikit-learn` (requirements.txt) or pick another data set")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if os.path.exists(path):
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits      # a scikit-learn that moved its files
    d = load_digits()
    return d.images, d.target


def images(size: int = 32, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits upsampled (bilinear) to size x size, standardised to mean 0, std 1 over
    the whole set, repeated to `channels` channels; and their labels."""
    raw, target = _raw()
    x = torch.tensor(raw, dtype=torch.float32).unsqueeze(1) / 16.0      # N,1,8,8 in [0,1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    if channels > 1:
        x = x.expand(-1, channels, -1, -1).contiguous()
    return x, torch.tensor(target, dtype=torch.long)


def split(x: torch.Tensor, y: torch.Tensor, train_fraction: float = 0.8):
    """(train, test) TensorDatasets by a fixed permutation (seed 0)."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_train = int(train_fraction * len(y))
    tr, te = perm[:n_train], perm[n_train:]
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te])
