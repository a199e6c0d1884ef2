"""Train LeNet-5 on handwritten digits.

  python lenet5/train.py --optimizer adamwprune --pruning-method state --target-sparsity 0.7
  cd lenet5 && python train.py --optimizer sgd --lr 0.05
  torchrun --nproc_per_node=2 lenet5/train.py --device cuda
  python lenet5/train.py --config results/runs/<run>/config.json     (what `make` runs)

Every setting is a flag (--help lists them with defaults); lib/trainer.py does the rest.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lenet5.config import Config          # noqa: E402
from lenet5.data import build_datasets, example_batch  # noqa: E402
from lenet5.model import LeNet5           # noqa: E402
from lib.trainer import ModelSpec, main   # noqa: E402

SPEC = ModelSpec(name="lenet5", config_class=Config, build_model=lambda cfg: LeNet5(),
                 build_datasets=build_datasets, example_batch=example_batch)

if __name__ == "__main__":
    sys.exit(main(SPEC))
