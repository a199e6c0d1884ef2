"""Optimizers: build_optimizer(model, cfg) and effective_grad_clip(cfg). See docs/optimizers.md.

sgd, adam, adamw and adamwadv are torch.optim classes. adamwspam is torch's AdamW plus the
spike-aware parts of SPAM (Huang et al. 2025), the only optimizer code written here.
adamwprune is the Adam variant named by cfg.adamwprune_base; its pruning lives in
lib/pruning.py (method "state"), which reads this optimizer's exp_avg and exp_avg_sq.

Weight decay goes to weights only (params with ndim >= 2); biases and norm parameters sit in
a second group with weight_decay 0. The learning rate is each group's plain 'lr', driven by
the trainer's schedule.
"""
import math

import torch


def base_optimizer(cfg) -> str:
    """The optimizer that actually steps: adamwprune runs on cfg.adamwprune_base."""
    return cfg.adamwprune_base if cfg.optimizer == "adamwprune" else cfg.optimizer


def effective_grad_clip(cfg) -> float:
    """cfg.grad_clip if set (> 0); else 1.0 for adamwadv (as the base of adamwprune too); else 0 (off)."""
    if cfg.grad_clip > 0:
        return float(cfg.grad_clip)
    return 1.0 if base_optimizer(cfg) == "adamwadv" else 0.0


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (ndim >= 2) decay; biases and norm parameters (ndim < 2) do not."""
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied weight once
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError(f"{type(model).__name__} has no trainable parameters: nothing to optimize")
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    name = base_optimizer(cfg)
    groups = param_groups(model, cfg.weight_decay)
    betas = (cfg.beta1, cfg.beta2)
    # one fused CUDA kernel for the whole update instead of foreach launches; CPU keeps
    # torch's default path (bit-identical resume is tested there)
    fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **fused)
    if name == "adam":  # torch's Adam adds weight decay to the gradient (L2), unlike AdamW
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, **fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, **fused)
    if name == "adamwadv":  # + cosine LR (trainer) and grad clip 1.0 (effective_grad_clip)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, amsgrad=True, **fused)
    if name == "adamwspam":
        return AdamWSPAM(groups, lr=cfg.lr, betas=betas,
                         spike_threshold=cfg.spam_spike_threshold,
                         clip_theta=cfg.spam_clip_theta,
                         reset_interval=cfg.spam_reset_interval,
                         reset_warmup=cfg.spam_reset_warmup)
    raise ValueError(f"optimizer={cfg.optimizer!r} (base {name!r}) is unknown: choose one of "
                     "sgd, adam, adamw, adamwadv, adamwspam, adamwprune (--optimizer)")


# -----------------------------------------------------------------------------
# SPAM: spike-aware AdamW

class AdamWSPAM(torch.optim.AdamW):
    """AdamW with SPAM's spike handling, applied to the gradients before AdamW's own step.

    1. Spike detection on the global gradient norm: a running mean and variance of the norm
       (exact for the first 100 steps, then exponential with decay STAT_DECAY) give a
       z-score; after MIN_HISTORY steps, a step whose z-score exceeds spike_threshold is a
       spike. A spike step rescales the gradient to the
       threshold norm (mean + threshold * std) and multiplies exp_avg by SOFT_RESET (a soft
       momentum reset). The statistics take the norm clipped to that threshold, so one spike
       does not widen them. All of it is tensor ops: no host sync per step.
    2. clip_theta > 0: each gradient entry is clipped to +-sqrt(clip_theta * exp_avg_sq)
       (raw, not bias-corrected, as in the SPAM code); entries whose exp_avg_sq is still 0
       are left alone, so a parameter that never had a gradient is not frozen at 0.
    3. reset_interval > 0: every reset_interval steps exp_avg, exp_avg_sq and the step count
       are zeroed, and the learning rate is multiplied by a cosine warm-up
       0.5 * (1 - cos(pi * k / reset_warmup)) for the k-th step after the reset, k = 1..warm-up.
    The statistics and the step counter live in self.spam and travel in state_dict()["spam"].
    """
    SOFT_RESET = 0.1     # exp_avg multiplier on a spike step
    STAT_DECAY = 0.99    # decay of the moving mean/variance of the gradient norm
    MIN_HISTORY = 10     # steps of statistics before a spike can be declared

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 spike_threshold=3.0, clip_theta=0.0, reset_interval=0, reset_warmup=0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.spike_threshold = float(spike_threshold)
        self.clip_theta = float(clip_theta)
        self.reset_interval = int(reset_interval)
        self.reset_warmup = int(reset_warmup)
        device = self.param_groups[0]["params"][0].device
        zero = torch.zeros((), dtype=torch.float32, device=device)
        self.spam = {"step": 0, "norm_mean": zero.clone(), "norm_var": zero.clone(),
                     "spikes": torch.zeros((), dtype=torch.long, device=device)}

    def lr_multiplier(self, step: int) -> float:
        """Cosine warm-up after a periodic momentum reset; 1.0 otherwise."""
        if self.reset_interval <= 0 or self.reset_warmup <= 0 or step < self.reset_interval:
            return 1.0
        k = step - (step // self.reset_interval) * self.reset_interval + 1
        if k >= self.reset_warmup:
            return 1.0
        return 0.5 * (1.0 - math.cos(math.pi * k / self.reset_warmup))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        s = self.spam
        s["step"] += 1
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if params:
            self._handle_spikes(params)
            if self.clip_theta > 0:
                self._clip_per_parameter(params)
        if self.reset_interval > 0 and s["step"] % self.reset_interval == 0:
            for st in self.state.values():
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    st[key].zero_()
        mult = self.lr_multiplier(s["step"])
        saved = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * mult
        try:
            super().step()
        finally:
            for g, lr in zip(self.param_groups, saved):
                g["lr"] = lr
        return loss

    def _handle_spikes(self, params):
        s = self.spam
        # exact running mean/variance for the first 1/(1 - STAT_DECAY) steps, then an EMA
        d = min(self.STAT_DECAY, 1.0 - 1.0 / s["step"])
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]).float()
        mean, var = s["norm_mean"], s["norm_var"]
        observed = norm
        if s["step"] > self.MIN_HISTORY:
            limit = mean + self.spike_threshold * var.sqrt()
            spike = norm > limit
            grad_scale = torch.where(spike, limit / norm, 1.0)
            momentum_scale = torch.where(spike, self.SOFT_RESET, 1.0)
            for p in params:
                p.grad.mul_(grad_scale.to(p.grad.dtype))
                st = self.state.get(p)
                if st and "exp_avg" in st:
                    st["exp_avg"].mul_(momentum_scale)
            s["spikes"] += spike
            observed = torch.minimum(norm, limit)
        delta = observed - mean
        mean.add_(delta, alpha=1.0 - d)
        var.mul_(d).add_(delta * delta, alpha=d * (1.0 - d))

    def _clip_per_parameter(self, params):
        for p in params:
            st = self.state.get(p)
            if not st or "exp_avg_sq" not in st:
                continue
            v = st["exp_avg_sq"]
            bound = (v * self.clip_theta).sqrt_().masked_fill_(v == 0, math.inf)
            p.grad.clamp_(min=-bound, max=bound)

    def state_dict(self):
        sd = super().state_dict()
        sd["spam"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.spam.items()}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        spam = state_dict.pop("spam", None)
        if spam is None:
            raise ValueError("optimizer checkpoint has no 'spam' entry, so it was not saved by "
                             "adamwspam: resume with the --optimizer it was saved with")
        super().load_state_dict(state_dict)
        for k, v in spam.items():
            self.spam[k] = v.to(self.spam[k].device).clone() if torch.is_tensor(v) else v
