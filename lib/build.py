"""Model, optimizer and pruner of a run, built in that order from its config: shared by the
training loop (lib/trainer.py) and the dry-run (lib/dryrun.py)."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

import kernels
from lib import optim, pruning
from lib.runconfig import KERNEL_SWITCHES, RunConfig


def kernel_switches(cfg: RunConfig) -> dict:
    """Set the kernels/ switches (KERNELS_TMA, ...) from the run config, unless the
    environment already sets one (an explicit override, e.g. on a GPU box); return the
    effective values, which the run records in status.json."""
    out = {}
    for env, name in KERNEL_SWITCHES.items():
        value = getattr(cfg, name)
        value = ("1" if value else "0") if isinstance(value, bool) else str(value)
        if env not in os.environ and value:
            os.environ[env] = value
        out[env] = os.environ.get(env, "")
    out["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET", "")
    return out


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(spec, cfg: RunConfig, device):
    """The run's model alone, built as training builds it (seeded initialisation, the kernel
    backend and kernels.Linear where the run uses them): training and inference (lib/infer.py)
    run the same modules. spec: the model's lib.trainer.ModelSpec."""
    set_seed(cfg.seed)
    model = spec.build_model(cfg)
    if cfg.kernel_backend != "torch" or cfg.kernel_linear:
        kernels.set_backend(cfg.kernel_backend)
        if cfg.kernel_linear:  # same parameters and state_dict; forward goes to kernels.linear
            kernels.swap_linear(model, sparse_block_size=cfg.pruning_block_size)
    return model.to(device)


def build_training(spec, cfg: RunConfig, total_steps: int, device):
    """Model, optimizer and pruner, in that order (the pruner reads the optimizer's state).
    spec: the model's lib.trainer.ModelSpec."""
    model = build_model(spec, cfg, device)
    optimizer = optim.build_optimizer(model, cfg)
    pruner = pruning.build_pruner(model, optimizer, cfg, total_steps)
    return model, optimizer, pruner
