"""A finished or interrupted run, found by its id or a unique prefix of it: its folder, its
resolved config, its weights and the model they fit, for inference (lib/infer.py) and
export (lib/export.py).

Weights: <models_dir>/model.pt (the final weights, written when a run is done) if present,
else the model state of the newest checkpoint (an interrupted run), with that checkpoint's
pruning masks. model.pt has zeros where pruned; its masks are those zeros (the pruner's
final masks, set by finalize() after the last checkpoint, are kept nowhere else).

Each model folder's infer.py names what inference needs beyond its train.py's SPEC (an
InferSpec: a tokenizer for language models, settings to pin from the weights); a run is
matched to it by the model its config names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch

import kernels

from lib import checkpoint, fsio, pruning, runrecord
from lib.build import build_model, kernel_switches
from lib.paths import REPO, RUNS
from lib.runconfig import ConfigError, RunConfig, model_part


@dataclass
class InferSpec:
    spec: object                        # the model's lib.trainer.ModelSpec (train.py's SPEC)
    tokenizer: Callable = None          # cfg -> tokenizer with encode(bytes), decode(ids) and
                                        # vocab_size: a language model generates text
    pin_config: Callable = None         # (cfg, state_dict) -> None: pin settings that this
                                        # machine could resolve otherwise (gpt2: tokenizer auto)


def infer_spec(model: str) -> InferSpec:
    """<model>/infer.py's INFER, looked up by name (as runconfig.config_class looks up a
    model's Config): lib/ never imports a model folder by itself."""
    return model_part(model, "infer", "INFER", "add one like lenet5/infer.py (three lines "
                      "over lib/infer.py)")


# -----------------------------------------------------------------------------
# finding a run

def find_run(ref: str, runs_dir: str | None = None) -> str:
    """The folder of run `ref`: a run folder's path, a run id, or a unique prefix of one."""
    runs_dir = runs_dir or RUNS
    if not ref:
        raise ConfigError(f"no run given: pass --run <run id or unique prefix> (make: RUN=); "
                          f"the runs are the folders of {runs_dir}")
    if os.path.isfile(os.path.join(ref, "config.json")):
        return os.path.abspath(ref)
    names = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    names = [n for n in names if os.path.isfile(os.path.join(runs_dir, n, "config.json"))]
    hits = [ref] if ref in names else [n for n in names if n.startswith(ref)]
    if not hits:
        raise ConfigError(f"no run {ref!r} in {runs_dir}: give a run id or a unique prefix of "
                          f"one (`ls {runs_dir}`; KNLP_RESULTS= moves results/)")
    if len(hits) > 1:
        more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
        raise ConfigError(f"run prefix {ref!r} is ambiguous in {runs_dir}: "
                          f"{', '.join(hits[:3])}{more}; give more of the id")
    return os.path.join(runs_dir, hits[0])


def read_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    d = fsio.read_json(path)
    if not isinstance(d, dict) or not d.get("model"):
        raise ConfigError(f"{path} is missing or not a run config; re-plan the run with "
                          f"`make FORCE=1` or train it again")
    return d


def load_config(run_dir: str, config_class) -> RunConfig:
    """The run's resolved config, with its paths pointed at where the run is now (a run
    folder may have moved: another KNLP_RESULTS, a copy from a GPU machine)."""
    path = os.path.join(run_dir, "config.json")
    cfg = config_class.from_dict(read_config(run_dir), source=path)
    recorded = cfg.out_dir
    cfg.out_dir = run_dir
    default_models = not cfg.models_dir or (
        recorded and os.path.abspath(cfg.models_dir) == os.path.join(os.path.abspath(recorded),
                                                                    "checkpoints"))
    if default_models or not os.path.isdir(cfg.models_dir):
        cfg.models_dir = os.path.join(run_dir, "checkpoints")
    if not cfg.data_dir or cfg.data_dir == "data" or not os.path.isdir(cfg.data_dir):
        cfg.data_dir = os.path.join(REPO, "data")    # the trainer's default (resolve_paths)
    return cfg


def load_weights(cfg: RunConfig, run_id: str):
    """(state_dict, source file, step or None, pruner masks or None) of the run."""
    final = os.path.join(cfg.models_dir, "model.pt")
    if os.path.isfile(final):
        try:
            return torch.load(final, map_location="cpu", weights_only=True), final, None, None
        except Exception as e:  # truncated or garbled: torch raises several types
            raise ConfigError(f"{final} of run {run_id} is unreadable ({type(e).__name__}); "
                              f"delete it to use the newest checkpoint instead") from None
    ck = checkpoint.load_latest(cfg.models_dir)
    if ck is None:
        raise ConfigError(f"run {run_id} has no weights (no model.pt or ckpt_*.pt in "
                          f"{cfg.models_dir}); train or resume it: python {cfg.model}/train.py "
                          f"--config {os.path.join(cfg.out_dir, 'config.json')}")
    if ck.get("config") != cfg.semantic_dict():
        raise ConfigError(f"checkpoint {ck['path']} was made with another config than "
                          f"{cfg.out_dir}/config.json; re-run the run with FORCE=1")
    pr = ck.get("pruner") or {}
    masks = dict(pr["masks"]) if pr.get("method", "none") != "none" and pr.get("masks") else None
    return ck["model"], ck["path"], ck["step"], masks


# -----------------------------------------------------------------------------
# the run, loaded

@dataclass
class LoadedRun:
    run_dir: str
    run_id: str
    cfg: RunConfig
    model: torch.nn.Module
    state_dict: dict                   # as read from the file (CPU tensors)
    source: str                        # model.pt or the checkpoint it came from
    step: int | None                   # the checkpoint's step (None: model.pt)
    pruner_masks: dict | None          # the checkpoint's masks, where it has them
    status: dict
    summary: dict
    device: torch.device
    config: dict                       # config.json as recorded (+ pinned settings): export
    notes: list = field(default_factory=list)

    @property
    def sparsity(self) -> dict:
        return pruning.measure_sparsity(self.model, self.cfg)

    def masks(self) -> tuple[dict, str]:
        """({prunable weight name: bool mask}, where from): the checkpoint's pruner masks,
        else weight != 0 per prunable weight."""
        if self.pruner_masks is not None:
            return {k: v.cpu().bool() for k, v in self.pruner_masks.items()}, "pruner"
        return ({n: (p.detach() != 0).cpu() for n, p in
                 pruning.prunable_parameters(self.model, self.cfg)}, "weights")


def pick_device(name: str, cfg: RunConfig) -> torch.device:
    """auto: the run's device where this machine has it, else the CPU."""
    if name == "auto":
        name = "cuda" if cfg.device == "cuda" and torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no GPU here; use --device cpu")
    return torch.device(name)


def load_run(ref: str, infer: InferSpec | None = None, device: str = "cpu") -> LoadedRun:
    """Find run `ref`, build its model as training did and load its weights."""
    run_dir = find_run(ref)
    run_id = os.path.basename(run_dir)
    model_name = read_config(run_dir)["model"]
    infer = infer or infer_spec(model_name)
    if infer.spec.name != model_name:
        raise ConfigError(f"run {run_id} is a {model_name} run, not {infer.spec.name}: "
                          f"python {model_name}/infer.py --run {run_id}")
    cfg = load_config(run_dir, infer.spec.config_class)
    state, source, step, masks = load_weights(cfg, run_id)
    notes, record = [], read_config(run_dir)
    if infer.pin_config:
        before = cfg.to_dict()
        infer.pin_config(cfg, state)
        record.update({k: v for k, v in cfg.to_dict().items() if before[k] != v})
    dev = pick_device(device, cfg)
    if dev.type != cfg.device:
        notes.append(f"trained on {cfg.device}, running on {dev.type}")
    cfg.device, cfg.compile = dev.type, False
    if dev.type == "cpu" and cfg.kernel_backend == "triton":
        cfg.kernel_backend = "cpu"      # what kernels/ would fall back to, without its warning
        notes.append("kernel_backend triton -> cpu (no GPU here)")
    kernel_switches(cfg)
    model = build_model(infer.spec, cfg, dev)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        commit = (runrecord.read_status(run_dir).get("environment") or {}).get("git_commit")
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"weights {source} do not fit the {model_name} model built from "
                          f"{run_dir}/config.json ({first}); the model code changed since the run: "
                          f"use its commit {commit or '(unknown)'}") from None
    model.eval()
    kernels.sync_block_layouts(model)   # pruned layers take the block-sparse kernels
    summary = fsio.read_json(os.path.join(run_dir, "summary.json"), default={}) or {}
    return LoadedRun(run_dir=run_dir, run_id=run_id, cfg=cfg, model=model, state_dict=state,
                     source=source, step=step, pruner_masks=masks,
                     status=runrecord.read_status(run_dir), summary=summary, device=dev,
                     config=record, notes=notes)
