"""GPT-2's data: token files made by gpt2/prepare.py, read as map-style datasets of
non-overlapping windows of block_size + 1 tokens (x = window[:-1], y = window[1:]), so
lib/data.py's epoch/step sampler shuffles windows and a resumed run sees the same ones.

Token files live in <data_dir>/gpt2/<dataset>-<tokenizer>/ (train.bin, val.bin, meta.json).
The stdlib corpus is prepared on first use; any other corpus must be prepared first.
"""
import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from gpt2 import prepare
from lib.runconfig import ConfigError


class TokenWindows(Dataset):
    def __init__(self, path: str, block_size: int):
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")
        self.span = block_size + 1
        self.n = len(self.tokens) // self.span
        if self.n == 0:
            raise ConfigError(f"{path} holds {len(self.tokens)} tokens, fewer than one window of "
                              f"block_size+1 = {self.span}; lower block_size (CONFIG_GPT2_BLOCK_SIZE) "
                              f"or prepare more text")

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        w = torch.from_numpy(self.tokens[i * self.span:(i + 1) * self.span].astype(np.int64))
        return w[:-1], w[1:]


def tokenizer(cfg) -> str:
    """The resolved tokenizer (auto -> gpt2 or byte on this machine)."""
    return prepare.resolve_tokenizer(cfg.tokenizer, cfg.data_dir)


def vocab_size(cfg) -> int:
    """The model's vocabulary: cfg.vocab_size, or the tokenizer's padded to a multiple of 64
    (GPT-2 BPE 50257 -> 50304, bytes 256). Known without reading any data, so a dry-run
    builds the right model."""
    need = prepare.vocab_size(tokenizer(cfg))
    if cfg.vocab_size and cfg.vocab_size < need:
        raise ConfigError(f"vocab_size={cfg.vocab_size} is smaller than the {tokenizer(cfg)} "
                          f"tokenizer's {need} tokens; raise CONFIG_GPT2_VOCAB_SIZE or set it to 0")
    return cfg.vocab_size or prepare.padded_vocab(need)


def token_dir(cfg) -> str:
    """The prepared token files, preparing the stdlib corpus if they are missing."""
    tok = tokenizer(cfg)
    d = prepare.dataset_dir(cfg.data_dir, cfg.dataset, tok)
    if os.path.exists(os.path.join(d, "meta.json")):
        return d
    if cfg.dataset == "stdlib":
        prepare.prepare("stdlib", cfg.data_dir, tok, log=lambda m: print(m, flush=True))
        return d
    raise ConfigError(f"no {tok}-tokenized {cfg.dataset!r} corpus in {d} (CONFIG_GPT2_DATASET, "
                      f"CONFIG_DATA_DIR); prepare it first: python gpt2/prepare.py --dataset "
                      f"{cfg.dataset} --tokenizer {tok} --data-dir {cfg.data_dir} --input <text files>")


def build_datasets(cfg):
    d = token_dir(cfg)
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    if meta["vocab_size"] > vocab_size(cfg):
        raise ConfigError(f"{d} was tokenized with {meta['vocab_size']} tokens but the model has "
                          f"{vocab_size(cfg)}; raise CONFIG_GPT2_VOCAB_SIZE or re-prepare")
    return (TokenWindows(os.path.join(d, "train.bin"), cfg.block_size),
            TokenWindows(os.path.join(d, "val.bin"), cfg.block_size))


# A dry-run runs two steps of the full-size model on the CPU; 1024-token sequences would
# take ~30 s a step for GPT-2 124M on 2 cores, so it uses short ones and scales their
# activations up (activation memory grows linearly in T: SDPA stores no T x T matrix).
EXAMPLE_T = 16


def example_batch(cfg, n):
    t = min(cfg.block_size, EXAMPLE_T)
    x = torch.randint(0, vocab_size(cfg), (n, t + 1))
    return x[:, :-1], x[:, 1:]


def example_scale(cfg) -> float:
    return cfg.block_size / min(cfg.block_size, EXAMPLE_T)
