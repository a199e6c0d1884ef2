"""Evaluate a trained GPT-2 run, report its sparsity and forward speed, and generate text
from a prompt with the run's tokenizer (lib/infer.py).

  python gpt2/infer.py --run <run id or unique prefix> --prompt "def main(" --tokens 64
  python gpt2/infer.py --run <id> --prompt "import " --temperature 0.8 --top-k 50 --seed 3
  make infer RUN=<id> PROMPT="def main(" TOKENS=64
"""
import sys

from gpt2 import prepare
from gpt2.train import SPEC
from lib.infer import main
from lib.runload import InferSpec


def pin_tokenizer(cfg, state_dict) -> None:
    """tokenizer=auto resolves by what this machine has (gpt2 BPE files or bytes); the
    weights say what the run had: a vocabulary under GPT-2's 50,257 tokens is bytes."""
    if cfg.tokenizer == "auto":
        rows = state_dict["transformer.wte.weight"].shape[0]
        cfg.tokenizer = "byte" if rows < prepare.GPT2_VOCAB else "gpt2"


def tokenizer(cfg):
    return prepare.get_tokenizer(cfg.tokenizer, cfg.data_dir)


INFER = InferSpec(SPEC, tokenizer=tokenizer, pin_config=pin_tokenizer)

if __name__ == "__main__":
    sys.exit(main(INFER))
