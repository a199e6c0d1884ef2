"""Data of ResNet-18: CIFAR-10/100 (torchvision, standard augmentation) or the shipped
digits as 3x32x32 images (offline, CPU runs and tests). lib/vision.py holds the loaders
both ResNets share; see docs/data.md.
"""
import torch

from lib import vision
from resnet18.config import Config


def num_classes(cfg) -> int:
    Config.check_choices(cfg, ("dataset",))
    return vision.NUM_CLASSES[cfg.dataset]


def build_datasets(cfg):
    num_classes(cfg)
    if cfg.dataset == "digits":
        return vision.digits_rgb()
    return vision.cifar(cfg.dataset, cfg.data_dir, cfg.data_download, "CONFIG_RESNET18_DATASET")


def example_batch(cfg, n):
    return torch.randn(n, 3, 32, 32), torch.randint(0, num_classes(cfg), (n,))
