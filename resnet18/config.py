"""ResNet-18's run settings: the shared RunConfig with this model's defaults.

Defaults are the full model (width 64) on CIFAR-10 with AdamW; the standard SGD recipe
(docs/models.md) is `--optimizer sgd --lr 0.1 --weight-decay 5e-4 --epochs 200
--batch-size 128`. The CPU preset (defconfigs/resnet18) trains a narrow one on the shipped
digits.
"""
from dataclasses import dataclass

from lib.runconfig import ConfigError, RunConfig


@dataclass
class Config(RunConfig):
    model: str = "resnet18"
    dataset: str = "cifar10"          # cifar10 | cifar100 (torchvision) | digits (offline)
    width: int = 64                   # channels of the first stage; stages double it
    batch_size: int = 128
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 5e-4
    checkpoint_interval: int = 500

    def validate(self) -> "Config":
        super().validate()
        if self.width < 1:
            raise ConfigError(f"width={self.width}: must be >= 1 (CONFIG_RESNET18_WIDTH, --width)")
        return self
