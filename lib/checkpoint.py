"""Checkpoints: one dict per file, written atomically, newest complete one wins.

A checkpoint holds model, optimizer, pruner, LR scheduler and grad scaler state, the step,
the data position (epoch, batch within the epoch), the RNG states of python, numpy, torch
and cuda, and the run config. Files are ckpt_<step:08d>.pt; the last `keep` are kept.
"""
from __future__ import annotations

import glob
import os
import random
import re

import numpy as np
import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    pass


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(ckpt_dir: str) -> list[str]:
    paths = [p for p in glob.glob(os.path.join(ckpt_dir, "ckpt_*.pt")) if _NAME.search(p)]
    return sorted(paths, key=lambda p: int(_NAME.search(p).group(1)))


def save(ckpt_dir: str, state: dict, step: int, keep: int = 2) -> str:
    """Write ckpt_<step>.pt atomically (temp file, fsync, rename); prune old ones."""
    os.makedirs(ckpt_dir, exist_ok=True)
    path = os.path.join(ckpt_dir, f"ckpt_{step:08d}.pt")
    tmp = path + ".tmp"
    state = dict(state, version=FORMAT_VERSION, step=step)
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        os.unlink(old)
    return path


def load_latest(ckpt_dir: str) -> dict | None:
    """The newest checkpoint, or None if there is none. A corrupt newest checkpoint is an
    error naming the file and the fix, never silently skipped."""
    paths = list_checkpoints(ckpt_dir)
    if not paths:
        return None
    path = paths[-1]
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated/garbled files
        raise CheckpointError(
            f"checkpoint {path} is corrupt ({type(e).__name__}: {str(e)[:80]}); delete it to "
            f"resume from the one before, or re-run from scratch with FORCE=1") from None
    if not isinstance(state, dict) or state.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a format-{FORMAT_VERSION} checkpoint; "
                              f"delete it or re-run with FORCE=1")
    state["path"] = path
    return state


def save_model(models_dir: str, model: torch.nn.Module) -> str:
    """The final weights alone (model.pt), for inference from a finished run."""
    os.makedirs(models_dir, exist_ok=True)
    path = os.path.join(models_dir, "model.pt")
    with open(path + ".tmp", "wb") as f:
        torch.save(model.state_dict(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return path
