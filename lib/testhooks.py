"""The trainer's test hooks, read from the environment at each step; none is set in a real
run.

KNLP_CRASH_AT=<rank>:<step>    that rank raises at that step (tests/lib/test_ddp.py: one
                               dead rank ends a torchrun job instead of hanging it)
KNLP_SLOW_STEP=<step>:<s>      that step sleeps s seconds, standing in for a slow compile
                               or a stalled step; a preemption signal cuts it short (the
                               step then checkpoints), so a test of a scheduler's time-limit
                               warning need not wait it out
KNLP_BATCH_SUMS=1              each step's inputs as checksums (float64 sum and sum of
                               squares of every micro-batch's first tensor), appended to
                               <out_dir>/batch_sums.rank<r>.jsonl: a resumed run must train
                               on exactly the batches of an uninterrupted one (a host sync
                               per step)
"""
from __future__ import annotations

import os
import time

from lib import fsio, preempt


def at_step(rank: int, step: int, out_dir: str, micro) -> None:
    if os.environ.get("KNLP_CRASH_AT") == f"{rank}:{step}":
        raise RuntimeError(f"KNLP_CRASH_AT: rank {rank} crashes at step {step}")
    slow = os.environ.get("KNLP_SLOW_STEP", "").split(":")
    if len(slow) == 2 and slow[0] == str(step):
        until = time.time() + float(slow[1])
        while time.time() < until and not preempt.should_stop():
            time.sleep(0.05)
    if os.environ.get("KNLP_BATCH_SUMS"):
        sums = [[float(m[0].double().sum()), float(m[0].double().square().sum())]
                for m in micro]
        fsio.append_jsonl(os.path.join(out_dir, f"batch_sums.rank{rank}.jsonl"),
                          {"step": step, "sums": sums})
