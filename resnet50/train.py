"""Train ResNet-50 on ImageNet (ImageFolder), CIFAR-100/10 or the shipped digits.

  python resnet50/train.py --dataset digits --width 8 --epochs 1 --batch-size 16
  python resnet50/train.py --device cuda --precision bf16 --data-dir /data --optimizer sgd \
      --lr 0.1 --weight-decay 1e-4 --epochs 90 --batch-size 256 --num-workers 8   (ImageNet)
  python resnet50/train.py --device cuda --precision bf16 --data-dir /data --decode gpu \
      --num-workers 4      (JPEGs decoded and augmented on the GPU, docs/data.md)
  python resnet50/train.py --device cuda --precision bf16 --dataset cifar100 --batch-size 128
  torchrun --nproc_per_node=8 resnet50/train.py --device cuda --precision bf16 --num-workers 8
  python resnet50/train.py --config results/runs/<run>/config.json     (what `make` runs)

ImageNet uses the 7x7 stem and max-pool at image_size; CIFAR and digits a 3x3 stem at 32x32.
Every setting is a flag (--help lists them with defaults); lib/trainer.py does the rest.
"""
import sys


import torch

from lib import vision
from lib.trainer import ModelSpec, main
from resnet50.config import Config
from resnet50.data import build_datasets, device_batches, example_batch, num_classes
from resnet50.model import ResNet50


def build_model(cfg):
    stem = "imagenet" if cfg.dataset == "imagenet" else "cifar"
    model = ResNet50(num_classes=num_classes(cfg), width=cfg.width, stem=stem)
    if cfg.device == "cuda":   # NHWC convolutions: the fast layout of cuDNN with bf16/fp16
        model = model.to(memory_format=torch.channels_last)
    return model


SPEC = ModelSpec(name="resnet50", config_class=Config, build_model=build_model,
                 build_datasets=build_datasets, example_batch=example_batch,
                 device_source=lambda cfg, ds: vision.device_source(cfg.dataset, ds),
                 device_batches=device_batches)

if __name__ == "__main__":
    sys.exit(main(SPEC))
