"""ResNet-50's run settings: the shared RunConfig with this model's defaults.

Defaults are the full model on ImageNet (ImageFolder) at 224x224 with AdamW; the standard
SGD recipe (docs/models.md) is `--optimizer sgd --lr 0.1 --weight-decay 1e-4 --epochs 90
--batch-size 256`. CIFAR-10/100 and the shipped digits run at 32x32 with a 3x3 stem.
"""
from dataclasses import dataclass

from lib.runconfig import RunConfig, setting


@dataclass
class Config(RunConfig):
    model: str = "resnet50"
    dataset: str = setting("imagenet", choices=("imagenet", "cifar100", "cifar10", "digits"))
    width: int = setting(64, lo=1, hi=1024)
    image_size: int = setting(224, lo=32, hi=1024)
    num_classes: int = setting(0, lo=0, hi=100000)
    decode: str = setting("pil", choices=("pil", "gpu"))
    batch_size: int = 256
    epochs: int = 90
    lr: float = 1e-3
    weight_decay: float = 1e-4
    checkpoint_interval: int = 1000

