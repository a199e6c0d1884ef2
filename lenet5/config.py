"""LeNet-5's run settings: the shared RunConfig with this model's defaults.

Defaults fit the shipped digits data on a 2-core CPU (seconds per run); the GPU presets
raise the batch size (lenet5/Kconfig) and the MNIST presets the epochs.
"""
from dataclasses import dataclass

from lib.runconfig import RunConfig, setting


@dataclass
class Config(RunConfig):
    model: str = "lenet5"
    dataset: str = setting("digits", choices=("digits", "mnist"))
    batch_size: int = 32
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_norm: bool = False
    checkpoint_interval: int = 50
