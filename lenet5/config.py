"""LeNet-5's run settings: the shared RunConfig with this model's defaults.

Defaults fit the shipped digits data on a 2-core CPU (seconds per run); the MNIST
presets in defconfigs/ raise epochs and batch size.
"""
from dataclasses import dataclass

from lib.runconfig import RunConfig


@dataclass
class Config(RunConfig):
    model: str = "lenet5"
    dataset: str = "digits"           # digits (scikit-learn, offline) | mnist (torchvision)
    batch_size: int = 32
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    checkpoint_interval: int = 50
