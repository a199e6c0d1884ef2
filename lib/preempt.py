"""Preemption and time limits, the trainer's side (docs/slurm.md).

A scheduler warns a run before it takes the GPUs back (SLURM: --signal=B:USR2@120, which
the batch script forwards). Checkpointing inside a signal handler can hang (the handler
may interrupt a collective or the async saver), so the handler only sets a flag; the
training loop asks should_stop() once per step, and when it says so rank 0's decision is
shared with every rank (agreed()), a synchronous checkpoint is written, the status becomes
`preempted` and the process exits with EXIT_PREEMPTED, on which the batch script requeues
its own task. The requeued task resumes from that checkpoint.

  preempt.install()                     # once, before the loop
  if preempt.agreed(): ...              # each step: checkpoint, status preempted, exit
"""
from __future__ import annotations

import os
import signal
import time

EXIT_PREEMPTED = 85          # not a code Python, torch or a signal death uses
DEFAULT_SIGNALS = ("USR1", "USR2")
FLAG_EVERY_S = 1.0           # how often should_stop() looks for KNLP_PREEMPT_FLAG

_caught: list = []
_watch = {"names": list(DEFAULT_SIGNALS), "last": 0.0}


class Preempted(Exception):
    """Raised by the loop once the checkpoint and the `preempted` status are written; the
    entry point turns it into EXIT_PREEMPTED."""


def _handler(signum, frame) -> None:
    _caught.append(signal.Signals(signum).name)


def configured() -> list:
    """The signals to catch: KNLP_PREEMPT_SIGNALS ("USR2", "USR1 USR2"), else USR1 and USR2,
    which otherwise kill the process before it can write a status."""
    names = os.environ.get("KNLP_PREEMPT_SIGNALS", "").replace(",", " ").split()
    return [n.upper().removeprefix("SIG") for n in names] or list(DEFAULT_SIGNALS)


def install(names: list | None = None) -> list:
    """Catch the signals (a flag only); returns their names. Call from the main thread.

    The SLURM batch script starts the trainer with the signal ignored, so that a warning
    that comes during start-up (imports, data) cannot kill it, and leaves the file
    KNLP_PREEMPT_FLAG when it receives one: found, here or by should_stop(), it counts
    as caught."""
    names = list(names or configured())
    for n in names:
        signal.signal(getattr(signal, "SIG" + n), _handler)
    _watch.update(names=names, last=0.0)
    _flag_left()
    return names


def _flag_left() -> bool:
    flag = os.environ.get("KNLP_PREEMPT_FLAG")
    if flag and not _caught and os.path.exists(flag):
        _caught.append(_watch["names"][0])
    return bool(_caught)


def should_stop() -> bool:
    """This process was signalled, or the batch script left word that its task was: the
    workers of torchrun run in sessions of their own, which a signal to the launcher's
    process group does not reach, so they look for the file (once a second at most)."""
    if not _caught and time.monotonic() - _watch["last"] >= FLAG_EVERY_S:
        _watch["last"] = time.monotonic()
        _flag_left()
    return bool(_caught)


def reason() -> str:
    return (f"SIG{_caught[0]} (preemption or time limit): checkpointed, the task requeues "
            f"itself and resumes here" if _caught else "")


def agreed() -> bool:
    """should_stop(), the same on every rank: rank 0's flag, broadcast (the batch script
    signals all ranks, but not always at the same step)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return should_stop()
    import torch
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1.0 if should_stop() else 0.0], device=dev)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def reset() -> None:
    """For tests: forget caught signals."""
    _caught.clear()


def slurm_facts(environ=None) -> dict:
    """The SLURM facts a run record keeps (empty outside SLURM)."""
    env = os.environ if environ is None else environ
    keys = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
            "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_node": "SLURMD_NODENAME",
            "slurm_restart_count": "SLURM_RESTART_COUNT", "slurm_nodelist": "SLURM_JOB_NODELIST"}
    out = {k: env[v] for k, v in keys.items() if env.get(v) not in (None, "")}
    if "slurm_job_id" in out:
        out.setdefault("slurm_restart_count", "0")
    return out
