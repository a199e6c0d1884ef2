"""Evaluate a trained lenet5 run, report its sparsity and forward speed (lib/infer.py).

  python lenet5/infer.py --run <run id or unique prefix>      (make infer RUN=<id>)
"""
import sys

from lenet5.train import SPEC
from lib.infer import main
from lib.runload import InferSpec

INFER = InferSpec(SPEC)

if __name__ == "__main__":
    sys.exit(main(INFER))
