"""Data of ResNet-50: ImageNet-layout ImageFolder at image_size (224) with the usual crop
pipeline, CIFAR-100/10 at 32x32 (torchvision), or the shipped digits as 3x32x32 images
(offline, CPU runs and tests). lib/vision.py holds the loaders both ResNets share; see
docs/data.md.
"""
import torch

from lib import gpu_data, vision
from lib.runconfig import ConfigError
from resnet50.config import Config

SYMBOL = "CONFIG_RESNET50_DATASET"


def check(cfg) -> None:
    Config.check_choices(cfg, ("dataset", "decode"))
    if cfg.decode == "gpu" and cfg.dataset != "imagenet":
        raise ConfigError(f"decode='gpu': JPEG decoding on the device is for the ImageNet "
                          f"folder, the data set is {cfg.dataset!r}; choose "
                          f"CONFIG_RESNET50_DECODE_PIL (--decode pil) or "
                          f"CONFIG_RESNET50_DATASET_IMAGENET (--dataset imagenet)")
    if cfg.decode == "gpu" and cfg.data_on_gpu:
        raise ConfigError("decode='gpu' with data_on_gpu: the ImageNet folder does not fit on "
                          "the device; turn CONFIG_RESNET50_DATA_ON_GPU off (--no-data-on-gpu)")


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
        return vision.imagefolder(cfg.data_dir, cfg.image_size, num_classes(cfg), SYMBOL,
                                  cfg.decode)
    return vision.cifar(cfg.dataset, cfg.data_dir, cfg.data_download, SYMBOL)


def device_batches(cfg, train, device):
    """CONFIG_RESNET50_DECODE_GPU: the training JPEGs decoded and augmented on the device
    (lib/gpu_data.DecodedBatches); None for the PIL path."""
    if cfg.decode != "gpu":
        return None
    return gpu_data.DecodedBatches(train, cfg.image_size, vision.IMAGENET_MEAN,
                                   vision.IMAGENET_STD, device,
                                   channels_last=torch.device(device).type == "cuda")


def example_batch(cfg, n):
    s = input_size(cfg)
    return torch.randn(n, 3, s, s), torch.randint(0, num_classes(cfg), (n,))
