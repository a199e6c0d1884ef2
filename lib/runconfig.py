"""The resolved configuration of one run: one flat, JSON-serialisable dataclass.

This module is the single schema shared by the planner (scripts/engine/plan.py, which fills it
from .config through kconfiglib) and by every train.py (which fills it from --config JSON
or from plain CLI flags). It imports nothing heavy: no torch.

Each model folder subclasses RunConfig in <model>/config.py to change defaults and add its
own fields (GPT-2's n_layer, ResNet-50's image_size, ...).

Kconfig mapping (done by scripts/engine/plan.py): field `foo_bar` of a model's runs is taken from
CONFIG_<MODEL>_FOO_BAR if that symbol exists, else from CONFIG_FOO_BAR, else the default.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, fields

OPTIMIZERS = ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
ADAM_FAMILY = ("adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
ADAMWPRUNE_BASES = ("adam", "adamw", "adamwadv", "adamwspam")
PRUNING_METHODS = ("none", "magnitude", "movement", "state")
STATE_SCORES = ("default", "magnitude", "sqrt_momentum", "movement_to_zero",
                "second_moment", "bias_corrected")
PRECISIONS = ("fp32", "bf16", "fp16")
KERNEL_BACKENDS = ("torch", "triton", "cpu")

# Fields that say where things go, not what is computed: left out of the run hash.
NON_SEMANTIC = ("data_dir", "data_download", "out_dir", "models_dir", "trackio_project", "trackio_dir",
                "num_workers", "monitor_interval", "log_interval", "gpu_memory_gb", "compile_mode")
# torch.compile's modes: how the same graphs run (CUDA graphs, longer tuning), not what they
# compute, so compile_mode is not part of a run's identity (a run may resume under another)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A bad configuration value; the message names the setting and the fix."""


@dataclass
class RunConfig:
    # --- what runs -------------------------------------------------------------
    model: str = ""
    dataset: str = ""
    data_dir: str = "data"
    data_download: bool = False       # let torchvision download MNIST/CIFAR when online
    seed: int = 1
    # --- optimizer (lib/optim.py; docs/optimizers.md) --------------------------
    optimizer: str = "adamw"
    adamwprune_base: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0            # 0 = off (adamwadv implies 1.0)
    lr_schedule: str = "cosine"       # constant | cosine
    warmup_steps: int = 0
    spam_spike_threshold: float = 3.0  # z-score of the global grad norm
    spam_clip_theta: float = 0.0       # 0 = no per-parameter clipping
    spam_reset_interval: int = 0       # 0 = no periodic momentum reset
    spam_reset_warmup: int = 0         # cosine warm-up steps after a reset
    # --- pruning (lib/pruning.py; docs/pruning.md) -----------------------------
    pruning_method: str = "none"
    target_sparsity: float = 0.0
    pruning_scope: str = "global"     # global | layer
    pruning_ramp: str = "cubic"       # cubic | linear
    pruning_warmup: float = 0.1       # fraction of total steps before pruning starts
    pruning_ramp_end: float = 0.7     # fraction of total steps where the target is reached
    pruning_frequency: int = 10       # steps between mask updates
    movement_variant: str = "grad"    # grad: -sum(g*W) | delta: W*(W-W0)
    state_score: str = "default"
    prune_embeddings: bool = False
    prune_head: bool = False
    pruning_block_size: int = 0       # 0 = unstructured; b = prune b x b blocks
    # --- schedule --------------------------------------------------------------
    batch_size: int = 64
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0                # 0 = epochs decide
    time_budget: float = 0.0          # seconds; 0 = none (make TIME=...)
    eval_interval: int = 0            # steps; 0 = at the end of each epoch
    eval_batches: int = 0             # 0 = whole eval set
    checkpoint_interval: int = 50     # optimizer steps
    keep_checkpoints: int = 2
    log_interval: int = 10
    # --- hardware ---------------------------------------------------------------
    device: str = "cpu"               # cpu | cuda
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"     # torch.compile mode; reduce-overhead = CUDA graphs
    gpus: int = 1
    num_workers: int = 0
    kernel_backend: str = "torch"     # torch | triton | cpu (kernels/; docs/kernels.md)
    kernel_linear: bool = False       # route nn.Linear layers through kernels.linear
    gpu_memory_gb: int = 0            # memory of one GPU of the preset (dry-run's check)
    # --- where things go and tracking -----------------------------------------
    out_dir: str = ""
    models_dir: str = ""              # checkpoints; default <out_dir>/checkpoints
    trackio: bool = False
    trackio_project: str = ""
    trackio_dir: str = ""
    monitor_interval: float = 2.0     # seconds between GPU/CPU samples

    # ---------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Raise ConfigError naming the setting and the fix; return self."""
        def bad(name, msg):
            raise ConfigError(f"{name}={getattr(self, name)!r}: {msg}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"unknown optimizer; choose one of {', '.join(OPTIMIZERS)}")
        if self.adamwprune_base not in ADAMWPRUNE_BASES:
            bad("adamwprune_base", f"choose one of {', '.join(ADAMWPRUNE_BASES)}")
        if self.pruning_method not in PRUNING_METHODS:
            bad("pruning_method", f"unknown method; choose one of {', '.join(PRUNING_METHODS)}")
        if not 0.0 <= self.target_sparsity < 1.0:
            bad("target_sparsity", "must be in [0, 1), e.g. 0.7 for 70 percent")
        if self.pruning_method == "state" and self.optimizer != "adamwprune":
            bad("pruning_method", "state pruning reads Adam's moments: use "
                "--optimizer adamwprune (CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE)")
        if self.optimizer == "adamwprune" and self.pruning_method in ("magnitude", "movement"):
            bad("pruning_method", "adamwprune prunes by its own state: use "
                "--pruning-method state, or --optimizer adamw for magnitude/movement")
        if self.pruning_method != "none" and self.target_sparsity <= 0.0:
            bad("target_sparsity", f"{self.pruning_method} pruning needs a target in (0, 1): "
                "give --target-sparsity (CONFIG_MATRIX_SPARSITY_*)")
        if self.pruning_method == "none" and self.target_sparsity > 0.0:
            bad("target_sparsity", "a target sparsity without a pruning method would train "
                "dense: give --pruning-method magnitude|movement|state "
                "(CONFIG_MATRIX_PRUNING_*), or drop --target-sparsity")
        if self.pruning_scope not in ("global", "layer"):
            bad("pruning_scope", "choose global or layer")
        if self.pruning_ramp not in ("cubic", "linear"):
            bad("pruning_ramp", "choose cubic or linear")
        if not 0.0 <= self.pruning_warmup <= self.pruning_ramp_end <= 1.0:
            bad("pruning_ramp_end", "need 0 <= pruning_warmup <= pruning_ramp_end <= 1")
        if self.movement_variant not in ("grad", "delta"):
            bad("movement_variant", "choose grad or delta")
        if self.state_score not in STATE_SCORES:
            bad("state_score", f"choose one of {', '.join(STATE_SCORES)}")
        if self.precision not in PRECISIONS:
            bad("precision", f"choose one of {', '.join(PRECISIONS)}")
        if self.device not in ("cpu", "cuda"):
            bad("device", "choose cpu or cuda")
        if self.compile_mode not in COMPILE_MODES:
            bad("compile_mode", f"choose one of {', '.join(COMPILE_MODES)}")
        if self.kernel_backend not in KERNEL_BACKENDS:
            bad("kernel_backend", f"choose one of {', '.join(KERNEL_BACKENDS)}")
        if self.lr_schedule not in ("constant", "cosine"):
            bad("lr_schedule", "choose constant or cosine")
        for name in ("batch_size", "grad_accum", "gpus", "checkpoint_interval",
                     "keep_checkpoints", "pruning_frequency", "log_interval"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.epochs < 1 and self.max_steps < 1:
            bad("epochs", "set epochs >= 1 or max_steps >= 1")
        if self.lr <= 0:
            bad("lr", "must be > 0")
        return self

    # ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def semantic_dict(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC}

    def config_hash(self) -> str:
        blob = json.dumps(self.semantic_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def run_id(self) -> str:
        s = "0" if self.pruning_method == "none" else f"{self.target_sparsity:g}"
        return f"{self.model}_{self.optimizer}_{self.pruning_method}_s{s}-{self.config_hash()}"

    @classmethod
    def field_types(cls) -> dict:
        return {f.name: _type_of(f) for f in fields(cls)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        """Build from a dict, coercing types; an unknown key fails with a suggestion."""
        types = cls.field_types()
        kwargs = {}
        for k, v in d.items():
            if k not in types:
                near = difflib.get_close_matches(k, list(types), n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                raise ConfigError(f"unknown setting {k!r} in {source}{hint}")
            kwargs[k] = coerce(k, v, types[k], source)
        return cls(**kwargs)


def _type_of(f: dataclasses.Field):
    t = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str,
                                                  "bool": bool}[str(f.type)]
    return t


def coerce(name: str, value, typ, source: str = "config"):
    """Convert value to typ; the one place where Kconfig's string floats are parsed."""
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("y", "yes", "true", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("n", "no", "false", "0", "off", ""):
                return False
            if isinstance(value, int):
                return bool(value)
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str):
                return int(value, 0)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} in {source} is not a valid {typ.__name__}") from None


def load_json(path: str, cls=RunConfig) -> RunConfig:
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"run config {path} does not exist; plan it with `make` or pass CLI flags")
    except json.JSONDecodeError as e:
        raise ConfigError(f"run config {path} is not valid JSON ({e}); re-plan with `make FORCE=1`")
    return cls.from_dict(d, source=path)
