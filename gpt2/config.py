"""GPT-2's run settings: the shared RunConfig with this model's defaults.

Defaults are GPT-2 124M (12 layers, 12 heads, 768 wide, 1024 tokens) with nanoGPT's
AdamW settings (lr 6e-4, betas 0.9/0.95, weight decay 0.1, clip 1.0, warm-up); batch_size
counts sequences per optimizer step. The CPU preset (defconfigs/gpt2) shrinks the model.
"""
from dataclasses import dataclass

from lib.runconfig import ConfigError, RunConfig


@dataclass
class Config(RunConfig):
    model: str = "gpt2"
    dataset: str = "stdlib"           # corpus prepared by gpt2/prepare.py (stdlib: automatic)
    tokenizer: str = "auto"           # auto | gpt2 (BPE) | byte
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024            # tokens per sequence
    dropout: float = 0.0
    vocab_size: int = 0               # 0 = the tokenizer's, padded to a multiple of 64
    batch_size: int = 16
    max_steps: int = 2000
    lr: float = 6e-4
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    warmup_steps: int = 100
    eval_interval: int = 250
    eval_batches: int = 20
    checkpoint_interval: int = 500

    def validate(self) -> "Config":
        super().validate()

        def bad(name, msg):
            raise ConfigError(f"{name}={getattr(self, name)!r}: {msg} "
                              f"(CONFIG_GPT2_{name.upper()}, --{name.replace('_', '-')})")
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.n_embd % self.n_head:
            bad("n_embd", f"must be a multiple of n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if self.vocab_size < 0:
            bad("vocab_size", "0 (the tokenizer's) or more")
        if self.tokenizer not in ("auto", "gpt2", "byte"):
            bad("tokenizer", "choose auto, gpt2 or byte")
        return self
