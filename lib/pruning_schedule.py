"""The gradual pruning schedule: which sparsity after how many steps, and when masks change.

Zhu & Gupta 2017 ("To prune, or not to prune"), cubic ramp:
    s(t) = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3)     for t0 < t < t1
linear ramp: s(t) = s_f * (t - t0) / (t1 - t0); cubic-in ramp (the original knlp's
magnitude and state pruning): s(t) = s_f * ((t - t0) / (t1 - t0))^3, little early and most
near t1; s(t) = 0 up to t0 and s_f from t1 on.
t0 = round(pruning_warmup * total_steps), t1 = round(pruning_ramp_end * total_steps)
(Python's round), with t1 >= 1 and t0 <= t1. See docs/pruning.md.

Under a TIME budget the schedule runs in fractions of whichever ends first: its position t
is the larger of the steps done and the used fraction of the budget times total_steps
(progress()), so a run the budget stops early still prunes gradually and reaches s_f by
pruning_ramp_end of its budget.
"""
import math


def ramp_steps(total_steps: int, warmup: float, ramp_end: float) -> tuple[int, int]:
    """(t0, t1): the step after which pruning starts and the step that reaches the target."""
    t1 = max(1, round(ramp_end * total_steps))
    return min(round(warmup * total_steps), t1), t1


def progress(step: int, total_steps: int, budget_used: float = 0.0) -> int:
    """The schedule's position in steps: the steps done, or budget_used (training time over
    the TIME budget, 0 without one) of total_steps if that is further."""
    return max(step, math.floor(budget_used * total_steps)) if budget_used > 0 else step


def sparsity_at(step: int, t0: int, t1: int, target: float, ramp: str) -> float:
    """Scheduled sparsity after `step` optimizer steps (or at position `step`, progress())."""
    if step >= t1:
        return target
    if step <= t0:
        return 0.0
    frac = (step - t0) / (t1 - t0)
    if ramp == "cubic":
        return target * (1.0 - (1.0 - frac) ** 3)
    if ramp == "linear":
        return target * frac
    if ramp == "cubic-in":
        return target * frac ** 3
    raise ValueError(f"pruning_ramp={ramp!r}: choose cubic, linear or cubic-in (--pruning-ramp)")


def is_update_step(step: int, t0: int, t1: int, frequency: int, at: int | None = None) -> bool:
    """Masks change every `frequency` steps after t0 inside the ramp, and exactly at t1.

    `at` is the schedule's position (progress(); the step itself without a budget). Ahead of
    the step (a TIME budget), masks change at the steps of the same cadence once the position
    is past t0, and at every step from the position's reaching t1 on: the pruner skips those
    once its masks are at the target, so the first of them is the last update."""
    at = step if at is None else at
    if at == step:
        return step == t1 or (t0 < step < t1 and (step - t0) % frequency == 0)
    return at >= t1 or (at > t0 and (step - t0) % frequency == 0)
