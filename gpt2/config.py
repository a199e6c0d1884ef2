"""GPT-2's run settings: the shared RunConfig with this model's defaults.

Defaults are GPT-2 124M (12 layers, 12 heads, 768 wide, 1024 tokens) with nanoGPT's
AdamW settings (lr 6e-4, betas 0.9/0.95, weight decay 0.1, clip 1.0, warm-up) and the GPU
presets' batch: 64 sequences per optimizer step in 4 micro-steps (batch_size counts
sequences per optimizer step over all GPUs). The CPU preset (defconfigs/gpt2) shrinks the
model and the batch (gpt2/Kconfig's `if HW_CPU` defaults).
"""
from dataclasses import dataclass

from lib.runconfig import ConfigError, RunConfig, setting


@dataclass
class Config(RunConfig):
    model: str = "gpt2"
    dataset: str = setting("stdlib", choices=("stdlib", "shakespeare", "openwebtext"))
    tokenizer: str = setting("auto", choices=("auto", "gpt2", "byte"))
    n_layer: int = setting(12, lo=1, hi=128)
    n_head: int = setting(12, lo=1, hi=128)
    n_embd: int = setting(768, lo=8, hi=16384)
    block_size: int = setting(1024, lo=8, hi=32768)
    dropout: float = 0.0
    vocab_size: int = setting(0, lo=0, hi=1000000)
    batch_size: int = 64
    grad_accum: int = 4
    max_steps: int = setting(2000, lo=1, hi=100000000)
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
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd}: must be a multiple of n_head={self.n_head} "
                              f"(CONFIG_GPT2_N_EMBD, --n-embd)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: must be in [0, 1) (CONFIG_GPT2_DROPOUT, "
                              f"--dropout)")
        return self
