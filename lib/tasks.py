"""What a model's loss and evaluation are: classification (accuracy) or language modelling
(perplexity). A task turns a batch into a loss, and eval batches into sums that the
trainer adds up (across ranks too) and finishes into metrics."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Classification:
    unit = "samples"
    primary = "accuracy"          # the summary's headline metric; higher is better

    def units(self, batch) -> int:
        return batch[0].shape[0]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def eval_sums(self, model, batch) -> dict:
        x, y = batch
        logits = model(x)
        return {"loss_sum": F.cross_entropy(logits.float(), y, reduction="sum").item(),
                "correct": (logits.argmax(-1) == y).sum().item(), "count": y.numel()}

    def finish(self, sums: dict) -> dict:
        n = max(sums["count"], 1)
        return {"loss": sums["loss_sum"] / n, "accuracy": 100.0 * sums["correct"] / n}


class LanguageModel:
    unit = "tokens"
    primary = "perplexity"        # lower is better

    def __init__(self, loss_in_model: bool = False):
        # loss_in_model: model(x, y) returns the mean loss itself, so torch.compile fuses the
        # cross-entropy into the model's graph instead of materialising fp32 logits outside
        # it (GPT-2 124M at 16 x 1024 tokens: 3.3 GB of them per micro-step)
        self.loss_in_model = loss_in_model

    def units(self, batch) -> int:
        return batch[0].numel()

    def loss(self, model, batch):
        x, y = batch
        if self.loss_in_model:
            return model(x, y)
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    @torch.no_grad()
    def eval_sums(self, model, batch) -> dict:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), reduction="sum")
        return {"loss_sum": loss.item(), "count": y.numel()}

    def finish(self, sums: dict) -> dict:
        loss = sums["loss_sum"] / max(sums["count"], 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
