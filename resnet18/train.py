"""Train ResNet-18 (CIFAR variant) on CIFAR-10/100 or the shipped digits.

  python resnet18/train.py --dataset digits --width 16 --epochs 2 --batch-size 32
  python resnet18/train.py --device cuda --precision bf16 --optimizer sgd --lr 0.1 \
      --weight-decay 5e-4 --epochs 200 --batch-size 128          (the standard CIFAR-10 recipe)
  torchrun --nproc_per_node=2 resnet18/train.py --device cuda --precision bf16
  python resnet18/train.py --config results/runs/<run>/config.json     (what `make` runs)

Every setting is a flag (--help lists them with defaults); lib/trainer.py does the rest.
"""
import sys


import torch

from lib import vision
from lib.trainer import ModelSpec, main
from resnet18.config import Config
from resnet18.data import build_datasets, example_batch, num_classes
from resnet18.model import ResNet18


def build_model(cfg):
    model = ResNet18(num_classes=num_classes(cfg), width=cfg.width)
    if cfg.device == "cuda":   # NHWC convolutions: the fast layout of cuDNN with bf16/fp16
        model = model.to(memory_format=torch.channels_last)
    return model


SPEC = ModelSpec(name="resnet18", config_class=Config, build_model=build_model,
                 build_datasets=build_datasets, example_batch=example_batch,
                 device_source=lambda cfg, ds: vision.device_source(cfg.dataset, ds))

if __name__ == "__main__":
    sys.exit(main(SPEC))
