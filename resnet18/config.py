"""ResNet-18's run settings: the shared RunConfig with this model's defaults.

Defaults are the full model (width 64) on CIFAR-10 with AdamW; the standard SGD recipe
(docs/models.md) is `--optimizer sgd --lr 0.1 --weight-decay 5e-4 --epochs 200
--batch-size 128`. The CPU preset (defconfigs/resnet18) trains a narrow one on the shipped
digits.
"""
from dataclasses import dataclass

from lib.runconfig import RunConfig, setting


@dataclass
class Config(RunConfig):
    model: str = "resnet18"
    dataset: str = setting("cifar10", choices=("cifar10", "cifar100", "digits"))
    width: int = setting(64, lo=1, hi=1024)
    batch_size: int = 128
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 5e-4
    checkpoint_interval: int = 500

