"""Evaluate a trained resnet18 run, report its sparsity and forward speed (lib/infer.py).

  python resnet18/infer.py --run <run id or unique prefix>      (make infer RUN=<id>)
"""
import sys

from resnet18.train import SPEC
from lib.infer import main
from lib.runload import InferSpec

INFER = InferSpec(SPEC)

if __name__ == "__main__":
    sys.exit(main(INFER))
