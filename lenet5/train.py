"""Train LeNet-5 on handwritten digits.

  python lenet5/train.py --optimizer adamwprune --pruning-method state --target-sparsity 0.7
  cd lenet5 && python train.py --optimizer sgd --lr 0.05
  torchrun --nproc_per_node=2 lenet5/train.py --device cuda
  python lenet5/train.py --config results/runs/<run>/config.json     (what `make` runs)

Every setting is a flag (--help lists them with defaults); lib/trainer.py does the rest.
"""
import sys


from lenet5.config import Config
from lenet5.data import build_datasets, example_batch
from lenet5.model import LeNet5
from lib.trainer import ModelSpec, main

SPEC = ModelSpec(name="lenet5", config_class=Config, build_model=lambda cfg: LeNet5(batch_norm=cfg.batch_norm),
                 build_datasets=build_datasets, example_batch=example_batch)

if __name__ == "__main__":
    sys.exit(main(SPEC))
