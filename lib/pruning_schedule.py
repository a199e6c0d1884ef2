"""The gradual pruning schedule: which sparsity after how many steps, and when masks change.

Zhu & Gupta 2017 ("To prune, or not to prune"), cubic ramp:
    s(t) = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3)     for t0 < t < t1
linear ramp: s(t) = s_f * (t - t0) / (t1 - t0); s(t) = 0 up to t0 and s_f from t1 on.
t0 = round(pruning_warmup * total_steps), t1 = round(pruning_ramp_end * total_steps)
(Python's round), with t1 >= 1 and t0 <= t1. See docs/pruning.md.
"""


def ramp_steps(total_steps: int, warmup: float, ramp_end: float) -> tuple[int, int]:
    """(t0, t1): the step after which pruning starts and the step that reaches the target."""
    t1 = max(1, round(ramp_end * total_steps))
    return min(round(warmup * total_steps), t1), t1


def sparsity_at(step: int, t0: int, t1: int, target: float, ramp: str) -> float:
    """Scheduled sparsity after `step` optimizer steps."""
    if step >= t1:
        return target
    if step <= t0:
        return 0.0
    frac = (step - t0) / (t1 - t0)
    if ramp == "cubic":
        return target * (1.0 - (1.0 - frac) ** 3)
    if ramp == "linear":
        return target * frac
    raise ValueError(f"pruning_ramp={ramp!r}: choose cubic or linear (--pruning-ramp)")


def is_update_step(step: int, t0: int, t1: int, frequency: int) -> bool:
    """Masks change every `frequency` steps after t0 inside the ramp, and exactly at t1."""
    return step == t1 or (t0 < step < t1 and (step - t0) % frequency == 0)
