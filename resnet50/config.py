"""ResNet-50's run settings: the shared RunConfig with this model's defaults.

Defaults are the full model on ImageNet (ImageFolder) at 224x224 with AdamW; the standard
SGD recipe (docs/models.md) is `--optimizer sgd --lr 0.1 --weight-decay 1e-4 --epochs 90
--batch-size 256`. CIFAR-10/100 and the shipped digits run at 32x32 with a 3x3 stem.
"""
from dataclasses import dataclass

from lib.runconfig import ConfigError, RunConfig


@dataclass
class Config(RunConfig):
    model: str = "resnet50"
    dataset: str = "imagenet"         # imagenet (ImageFolder) | cifar100 | cifar10 | digits
    width: int = 64                   # channels of the stem; bottleneck stages are 64..512 x4
    image_size: int = 224             # ImageNet crop; CIFAR and digits are always 32x32
    num_classes: int = 0              # 0 = the data set's (1000, 100, 10)
    batch_size: int = 256
    epochs: int = 90
    lr: float = 1e-3
    weight_decay: float = 1e-4
    checkpoint_interval: int = 1000

    def validate(self) -> "Config":
        super().validate()
        if self.width < 1:
            raise ConfigError(f"width={self.width}: must be >= 1 (CONFIG_RESNET50_WIDTH, --width)")
        if self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size}: must be >= 32 "
                              f"(CONFIG_RESNET50_IMAGE_SIZE, --image-size)")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes={self.num_classes}: 0 (the data set's) or more "
                              f"(CONFIG_RESNET50_NUM_CLASSES, --num-classes)")
        return self
