"""Evaluate a trained resnet50 run, report its sparsity and forward speed (lib/infer.py).

  python resnet50/infer.py --run <run id or unique prefix>      (make infer RUN=<id>)
"""
import sys

from resnet50.train import SPEC
from lib.infer import main
from lib.runload import InferSpec

INFER = InferSpec(SPEC)

if __name__ == "__main__":
    sys.exit(main(INFER))
