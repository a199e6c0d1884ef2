"""Per-weight importance scores: higher = keep. See docs/pruning.md.

Each function takes the weight and what its method needs and returns a new float tensor of
the weight's shape; nothing here keeps state.
"""
import torch


def magnitude(w: torch.Tensor) -> torch.Tensor:
    """|W| (Zhu & Gupta 2017)."""
    return w.abs()


def accumulate_movement(score: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> None:
    """S -= g * W, in place (Sanh et al. 2020: S = -sum_t dL/dW * W).

    A non-finite gradient (an fp16 step the grad scaler will skip) adds nothing.
    """
    score.addcmul_(torch.nan_to_num(g.float(), nan=0.0, posinf=0.0, neginf=0.0), w.float(),
                   value=-1.0)


def movement_delta(w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """W * (W - W0): positive when the weight moved away from zero since W0."""
    return w * (w - w0)


def state(w: torch.Tensor, m: torch.Tensor, v: torch.Tensor, kind: str, *, step: float,
          beta1: float, beta2: float, eps: float) -> torch.Tensor:
    """AdamWPrune scores from Adam's exp_avg m and exp_avg_sq v (no buffers of its own).

    default          |W * m| * |W| / (sqrt(v) + eps)
    magnitude        |W|
    sqrt_momentum    |W| * sqrt(|m|)
    movement_to_zero -(sign(W) * m) / (sqrt(v) + eps): the update is -lr * m / sqrt(v), so
                     sign(W) * m > 0 means W moves toward zero and scores low (pruned first)
    second_moment    |W| / (sqrt(v) + eps)
    bias_corrected   default with m / (1 - beta1^t) and v / (1 - beta2^t), t = Adam's step
    """
    if kind == "default":
        return (w * m).abs_().mul_(w.abs()).div_(v.sqrt().add_(eps))
    if kind == "magnitude":
        return w.abs()
    if kind == "sqrt_momentum":
        return m.abs().sqrt_().mul_(w.abs())
    if kind == "movement_to_zero":
        return (w.sign() * m).neg_().div_(v.sqrt().add_(eps))
    if kind == "second_moment":
        return w.abs().div_(v.sqrt().add_(eps))
    if kind == "bias_corrected":
        if step < 1:
            raise ValueError("state_score=bias_corrected needs Adam's step >= 1; "
                             "pruning started before the first optimizer step")
        m_hat = m / (1.0 - beta1 ** step)
        v_hat = v / (1.0 - beta2 ** step)
        return (w * m_hat).abs_().mul_(w.abs()).div_(v_hat.sqrt_().add_(eps))
    raise ValueError(f"state_score={kind!r} is unknown: choose default, magnitude, sqrt_momentum, "
                     "movement_to_zero, second_moment or bias_corrected (--state-score)")
