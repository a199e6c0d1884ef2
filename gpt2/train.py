"""Train GPT-2 (124M by default) on a tokenized text corpus.

  python gpt2/train.py --n-layer 2 --n-head 2 --n-embd 64 --block-size 64 --max-steps 40 \
      --batch-size 8                                   (CPU smoke; stdlib corpus, prepared on first use)
  python gpt2/train.py --device cuda --precision bf16 --compile --batch-size 64 --grad-accum 4
  torchrun --nproc_per_node=8 gpt2/train.py --device cuda --precision bf16 --compile \
      --batch-size 512 --grad-accum 4                  (8 GPUs x 4 micro-steps x 16 sequences)
  python gpt2/prepare.py --dataset openwebtext --input /data/owt && \
      python gpt2/train.py --dataset openwebtext --device cuda --precision bf16 --compile
  python gpt2/train.py --config results/runs/<run>/config.json     (what `make` runs)

batch_size counts sequences per optimizer step over all GPUs and accumulation steps.
Every setting is a flag (--help lists them with defaults); lib/trainer.py does the rest.
"""
import sys


from gpt2.config import Config
from gpt2.data import build_datasets, example_batch, example_scale, vocab_size
from gpt2.model import GPT
from lib.tasks import LanguageModel
from lib.trainer import ModelSpec, main


def build_model(cfg):
    return GPT(cfg, vocab_size(cfg))


SPEC = ModelSpec(name="gpt2", config_class=Config, build_model=build_model,
                 build_datasets=build_datasets, example_batch=example_batch,
                 task=LanguageModel(loss_in_model=True), example_scale=example_scale)

if __name__ == "__main__":
    sys.exit(main(SPEC))
