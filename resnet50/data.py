"""Data of ResNet-50: ImageNet-layout ImageFolder at image_size (224) with the usual crop
pipeline, CIFAR-100/10 at 32x32 (torchvision), or the shipped digits as 3x32x32 images
(offline, CPU runs and tests). lib/vision.py holds the loaders both ResNets share; see
docs/data.md.
"""
import torch

from lib import vision
from resnet50.config import Config

SYMBOL = "CONFIG_RESNET50_DATASET"


def check(cfg) -> None:
    Config.check_choices(cfg, ("dataset",))


def num_classes(cfg) -> int:
    check(cfg)
    return cfg.num_classes or vision.NUM_CLASSES[cfg.dataset]


def input_size(cfg) -> int:
    """224 (image_size) for ImageNet; 32 for CIFAR and digits."""
    check(cfg)
    return cfg.image_size if cfg.dataset == "imagenet" else 32


def build_datasets(cfg):
    check(cfg)
    if cfg.dataset == "digits":
        return vision.digits_rgb()
    if cfg.dataset == "imagenet":
        return vision.imagefolder(cfg.data_dir, cfg.image_size, num_classes(cfg), SYMBOL)
    return vision.cifar(cfg.dataset, cfg.data_dir, cfg.data_download, SYMBOL)


def example_batch(cfg, n):
    s = input_size(cfg)
    return torch.randn(n, 3, s, s), torch.randint(0, num_classes(cfg), (n,))
