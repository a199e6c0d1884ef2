"""Export a run's pruned weights, their masks and its resolved config to one .safetensors
file, and load such a file back with torch and safetensors alone.

  python -m lib.export --run <run id or unique prefix> [--out DIR_OR_FILE]
  make export RUN=<id> [OUT=dir or file.safetensors]

The file (default <run>/model.safetensors) holds every tensor of the model's state_dict
under its own name (a tied weight once: the other names are in the metadata's "aliases")
and one bool mask per prunable weight under "mask:<name>": the pruner's masks where the
weights come from a checkpoint (an interrupted run), else weight != 0 (model.pt holds zeros
where pruned). Its metadata (strings): format, run_id, model, config (the resolved run
config.json as JSON), sparsity, masks_from (pruner | weights), source, step, git_commit and
git_dirty (the tree the run trained from), export_commit, aliases and order (JSON).

Build the model from it (the model folder is the one the config names):

    from lib.export import load
    from lenet5.train import SPEC
    state_dict, masks, config = load("results/runs/<run>/model.safetensors")
    model = SPEC.build_model(SPEC.config_class.from_dict(config))
    model.load_state_dict(state_dict); model.eval()
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save

from lib import checkpoint, fsio, runrecord
from lib.runconfig import ConfigError
from lib.runload import LoadedRun, load_run

FORMAT = "knlp-export-1"
MASK = "mask:"          # no parameter name holds a colon


def _tensors(state_dict: dict) -> tuple[dict, dict]:
    """(tensors to store, {alias: stored name}): a tensor that is the same view of the same
    storage as an earlier one (a tied weight) is stored once."""
    out, aliases, seen = {}, {}, {}
    for name, t in state_dict.items():
        t = t.detach().cpu()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               tuple(t.stride()), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t.contiguous()
    return out, aliases


def out_path(run: LoadedRun, out: str | None) -> str:
    if not out:
        return os.path.join(run.run_dir, "model.safetensors")
    if out.endswith(".safetensors"):
        return os.path.abspath(out)
    return os.path.join(os.path.abspath(out), f"{run.run_id}.safetensors")


def export(run: LoadedRun, out: str | None = None) -> tuple[str, dict]:
    """Write run's export file; return (path, metadata)."""
    tensors, aliases = _tensors(run.state_dict)
    masks, masks_from = run.masks()
    for name, m in masks.items():
        tensors[MASK + name] = m.contiguous()
    env = run.status.get("environment") or {}
    meta = {"format": FORMAT, "run_id": run.run_id, "model": run.cfg.model,
            "config": json.dumps(run.config, sort_keys=True),
            "sparsity": f"{run.sparsity['sparsity']:.6f}", "masks_from": masks_from,
            "source": os.path.relpath(run.source, run.run_dir),
            "step": str(run.step if run.step is not None else run.status.get("step", "")),
            "git_commit": str(env.get("git_commit") or ""),
            "git_dirty": str(env.get("git_dirty", "")),
            "export_commit": str(runrecord.git_state()["git_commit"] or ""),
            "aliases": json.dumps(aliases, sort_keys=True),
            "order": json.dumps(list(run.state_dict))}
    path = out_path(run, out)
    fsio.atomic_write_bytes(path, save(tensors, metadata=meta))
    return path, meta


def load(path: str, device: str = "cpu") -> tuple[dict, dict, dict]:
    """(state_dict, masks, config) of an export file: state_dict in the model's order with
    tied weights tied again, masks {prunable weight name: bool tensor}, config the run
    config as a dict (<model>.config.Config.from_dict(config) rebuilds it)."""
    with safe_open(path, framework="pt", device=device) as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a knlp export (format {meta.get('format')!r}, "
                             f"expected {FORMAT!r}); write one with `make export RUN=<id>`")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    masks = {k[len(MASK):]: v for k, v in tensors.items() if k.startswith(MASK)}
    stored = {k: v for k, v in tensors.items() if not k.startswith(MASK)}
    for alias, name in json.loads(meta.get("aliases", "{}")).items():
        stored[alias] = stored[name]
    order = json.loads(meta.get("order", "[]")) or sorted(stored)
    state_dict = {k: stored[k] for k in order}
    return state_dict, masks, json.loads(meta["config"])


def metadata(path: str) -> dict:
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lib.export", allow_abbrev=False,
                                description="write a run's pruned weights, masks and config "
                                "to one .safetensors file")
    p.add_argument("--run", required=True, help="run id, a unique prefix of one, or a run folder")
    p.add_argument("--out", default="", help="a folder (<run id>.safetensors inside) or a "
                   ".safetensors path; default <run>/model.safetensors")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run = load_run(args.run, device="cpu")
        path, meta = export(run, args.out or None)
    except (ConfigError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_masks = sum(1 for _ in run.masks()[0])
    print(f"exported {run.run_id}: {len(run.state_dict)} tensors, {n_masks} masks (from "
          f"{meta['masks_from']}), sparsity {meta['sparsity']}, {os.path.getsize(path):,} "
          f"bytes -> {path}")
    print(f"load it: from lib.export import load; state_dict, masks, config = load({path!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
