"""A run's status file and record: what ran where, and how it ended.

status.json is written atomically and last: a run is done when its status says so,
never because a log line says so.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time

from lib import fsio
from lib.runconfig import KERNEL_SWITCHES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment() -> dict:
    import torch
    env = {"host": socket.gethostname(), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "world_size": int(os.environ.get("WORLD_SIZE", "1")),
           # the kernels/ switches in effect (lib/build.kernel_switches set them from the
           # run config unless the environment did): which plans ran
           "kernel_switches": {k: os.environ.get(k) for k in (*KERNEL_SWITCHES, "KERNELS_BACKEND",
                                                               "TRITON_INTERPRET")}}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    env.update(git_state())
    return env


def git_state() -> dict:
    try:
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", "-q", "HEAD"],
                           capture_output=True, text=True, timeout=5)
        commit = r.stdout.strip() if r.returncode == 0 else None
        dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "-uno"],
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty}


def read_status(out_dir: str) -> dict:
    return fsio.read_json(os.path.join(out_dir, "status.json"), default={}) or {}


def write_status(out_dir: str, status: str, **extra) -> None:
    path = os.path.join(out_dir, "status.json")
    old = read_status(out_dir)
    now = time.time()
    rec = {"status": status, "updated": now, "pid": os.getpid()}
    rec["started"] = (old.get("started") or now) if status != "queued" else None
    if status in ("done", "failed", "interrupted"):
        rec["stopped"] = now
    if status == "running" and "environment" not in old:
        rec["environment"] = environment()
    elif "environment" in old:
        rec["environment"] = old["environment"]
    rec.update(extra)
    fsio.atomic_write_json(path, rec)
