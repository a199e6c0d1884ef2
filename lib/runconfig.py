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
import importlib
import json
from dataclasses import dataclass, fields

OPTIMIZERS = ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
ADAM_FAMILY = ("adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
ADAMWPRUNE_BASES = ("adam", "adamw", "adamwadv", "adamwspam")
PRUNING_METHODS = ("none", "magnitude", "movement", "state")
STATE_SCORES = ("default", "magnitude", "sqrt_momentum", "movement_to_zero",
                "second_moment", "bias_corrected")
# torch.compile's modes: how the same graphs run (CUDA graphs, longer tuning), not what they
# compute, so compile_mode is not part of a run's identity (a run may resume under another)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Fields that say where things go, not what is computed: left out of the run hash.
NON_SEMANTIC = ("data_dir", "data_download", "out_dir", "models_dir", "trackio_project", "trackio_dir",
                "num_workers", "monitor_interval", "log_interval", "gpu_memory_gb", "compile_mode",
                "id_seed", "kernels_tma", "kernels_persistent", "kernels_autotune",
                "kernels_cache_dir")
# Semantic fields added after run ids were first published: in the hash only when set away
# from their default, so the runs that existed before them keep their ids. A model's own
# field (lenet5's batch_norm, resnet50's decode) counts for the models that have it.
LATER = ("data_on_gpu", "decode", "batch_norm")
# The kernels/ switches (environment variables, read at call time) and their fields
KERNEL_SWITCHES = {"KERNELS_TMA": "kernels_tma", "KERNELS_PERSISTENT": "kernels_persistent",
                   "KERNELS_AUTOTUNE": "kernels_autotune", "KERNELS_CACHE_DIR": "kernels_cache_dir"}


class ConfigError(ValueError):
    """A bad configuration value; the message names the setting and the fix."""


def setting(default, *, choices=(), lo=None, hi=None, help=""):
    """A run-config field with its default, its choices or its range [lo, hi], and, for the
    few fields no Kconfig symbol sets, its help text (the others take Kconfig's)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices),
                                                        "range": (lo, hi), "help": help})


def meta(cls, name: str) -> dict:
    """The field's metadata: its own, or, where a subclass only changes the default, that of
    the class that declared it."""
    for klass in cls.__mro__:
        f = klass.__dict__.get("__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata:
            return dict(f.metadata)
    return {"choices": (), "range": (None, None), "help": ""}


def combination_reason(optimizer: str, method: str):
    """Why optimizer x pruning method cannot run, or None. The one place of this rule: the
    planner skips such a pair, train.py refuses it, and Kconfig's `depends on` of
    MATRIX_PRUNING_* says the same (tests/lib/test_settings.py checks they agree)."""
    if method == "state" and optimizer != "adamwprune":
        return ("state pruning reads AdamWPrune's moments: it runs only with --optimizer "
                "adamwprune (CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE)")
    if optimizer == "adamwprune" and method in ("magnitude", "movement"):
        return ("adamwprune prunes by its own state: use --pruning-method state, or "
                "magnitude/movement with another optimizer (--optimizer adamw)")
    return None


@dataclass
class RunConfig:
    # --- what runs -------------------------------------------------------------
    model: str = setting("", help="the model folder (set by its train.py)")
    dataset: str = ""
    data_dir: str = "data"
    data_download: bool = False
    seed: int = setting(1, lo=0, hi=2147483647, help="seeds python, numpy and torch, the data "
                        "order and the augmentation (in a matrix, CONFIG_MATRIX_SEEDS)")
    # --- optimizer (lib/optim.py; docs/optimizers.md) --------------------------
    optimizer: str = setting("adamw", choices=OPTIMIZERS, help="the optimizer (docs/"
                             "optimizers.md; in a matrix, CONFIG_MATRIX_OPTIMIZER_*)")
    adamwprune_base: str = setting("adamw", choices=ADAMWPRUNE_BASES)
    lr: float = setting(1e-3, help="peak learning rate (each model's menu sets its own)")
    weight_decay: float = setting(0.0, help="weight decay, on weights only (each model's "
                                  "menu sets its own)")
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0
    lr_schedule: str = setting("cosine", choices=("constant", "cosine"),
                               help="linear warm-up, then cosine to 10 percent of lr, or constant")
    warmup_steps: int = setting(0, lo=0, hi=1000000, help="linear learning-rate warm-up steps")
    spam_spike_threshold: float = 3.0
    spam_clip_theta: float = 0.0
    spam_reset_interval: int = setting(0, lo=0, hi=10000000)
    spam_reset_warmup: int = setting(0, lo=0, hi=10000000)
    # --- pruning (lib/pruning.py; docs/pruning.md) -----------------------------
    pruning_method: str = setting("none", choices=PRUNING_METHODS, help="the pruning method "
                                  "(docs/pruning.md; in a matrix, CONFIG_MATRIX_PRUNING_*)")
    target_sparsity: float = setting(0.0, help="final fraction of prunable weights that are "
                                     "zero, in [0, 1) (in a matrix, CONFIG_MATRIX_SPARSITY_LEVELS)")
    pruning_scope: str = setting("global", choices=("global", "layer"))
    pruning_ramp: str = setting("cubic", choices=("cubic", "linear", "cubic-in"))
    pruning_warmup: float = 0.1
    pruning_ramp_end: float = 0.7
    pruning_frequency: int = setting(10, lo=1, hi=1000000)
    movement_variant: str = setting("grad", choices=("grad", "delta"))
    state_score: str = setting("default", choices=STATE_SCORES)
    prune_embeddings: bool = False
    prune_head: bool = False
    pruning_block_size: int = setting(0, lo=0, hi=256)
    # --- schedule --------------------------------------------------------------
    batch_size: int = setting(64, lo=1, hi=65536, help="samples per optimizer step over all "
                              "GPUs and accumulation steps")
    grad_accum: int = setting(1, lo=1, hi=4096, help="micro-steps per optimizer step")
    epochs: int = setting(1, lo=1, hi=10000, help="passes over the training set")
    max_steps: int = setting(0, lo=0, hi=100000000, help="optimizer steps; 0: epochs decide")
    time_budget: float = setting(0.0, lo=0, hi=31536000)
    eval_interval: int = setting(0, lo=0, hi=1000000, help="evaluate every N steps; 0: at the "
                                 "end of each epoch")
    eval_batches: int = setting(0, lo=0, hi=1000000, help="batches per evaluation; 0: the "
                                "whole eval set")
    checkpoint_interval: int = setting(50, lo=1, hi=1000000)
    keep_checkpoints: int = setting(2, lo=1, hi=100)
    log_interval: int = setting(10, lo=1, hi=100000)
    # --- hardware ---------------------------------------------------------------
    device: str = setting("cpu", choices=("cpu", "cuda"))
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))
    compile: bool = False
    compile_mode: str = setting("default", choices=COMPILE_MODES)
    gpus: int = setting(1, lo=1, hi=64)
    num_workers: int = setting(0, lo=0, hi=64)
    data_on_gpu: bool = setting(False, help="crop, flip and normalise image batches on the "
                                "device (lib/gpu_data.py; the ResNets' CONFIG_*_DATA_ON_GPU)")
    kernel_backend: str = setting("torch", choices=("torch", "triton", "cpu"))
    kernel_linear: bool = False
    gpu_memory_gb: int = setting(0, lo=0, hi=1024)
    kernels_tma: bool = True
    kernels_persistent: bool = True
    kernels_autotune: str = setting("1", choices=("1", "0", "compile"))
    kernels_cache_dir: str = ""
    # --- where things go and tracking -----------------------------------------
    out_dir: str = setting("", help="the run folder; default results/runs/<run id>")
    models_dir: str = ""
    trackio: bool = False
    trackio_project: str = setting("", help="trackio project; default the matrix name "
                                   "(by hand: the model)")
    trackio_dir: str = setting("", help="trackio's store; default results/trackio")
    monitor_interval: float = 2.0
    id_seed: bool = setting(False, help="the run id shows the seed (set by the planner when "
                            "a matrix has several seeds)")

    # ---------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Raise ConfigError naming the setting and the fix; return self. Choices and ranges
        come from the field metadata; the rules between fields are below."""
        def bad(name, msg):
            raise ConfigError(f"{name}={getattr(self, name)!r}: {msg}")
        for f in fields(self):
            m, v = meta(type(self), f.name), getattr(self, f.name)
            if m["choices"] and v not in m["choices"]:
                type(self).check_choices(self, (f.name,))
            lo, hi = m["range"]
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                bad(f.name, f"must be in [{lo}, {hi}]" if hi is not None else f"must be >= {lo}")
        if not 0.0 <= self.target_sparsity < 1.0:
            bad("target_sparsity", "must be in [0, 1), e.g. 0.7 for 70 percent")
        reason = combination_reason(self.optimizer, self.pruning_method)
        if reason:
            bad("pruning_method", reason)
        if self.pruning_method != "none" and self.target_sparsity <= 0.0:
            bad("target_sparsity", f"{self.pruning_method} pruning needs a target in (0, 1): "
                "give --target-sparsity (CONFIG_MATRIX_SPARSITY_LEVELS)")
        if self.pruning_method == "none" and self.target_sparsity > 0.0:
            bad("target_sparsity", "a target sparsity without a pruning method would train "
                "dense: give --pruning-method magnitude|movement|state "
                "(CONFIG_MATRIX_PRUNING_*), or drop --target-sparsity")
        if not 0.0 <= self.pruning_warmup <= self.pruning_ramp_end <= 1.0:
            bad("pruning_ramp_end", "need 0 <= pruning_warmup <= pruning_ramp_end <= 1")
        if self.epochs < 1 and self.max_steps < 1:
            bad("epochs", "set epochs >= 1 or max_steps >= 1")
        if self.lr <= 0:
            bad("lr", "must be > 0")
        return self

    @classmethod
    def check_choices(cls, obj, names) -> None:
        """The choice check of validate() for a few fields of any object that has them (the
        pruner and the data loaders check theirs this way)."""
        for name in names:
            allowed = meta(cls, name)["choices"]
            if getattr(obj, name) not in allowed:
                # a choice a model declares is set by its own symbol (CONFIG_RESNET18_DATASET)
                mine = (cls is not RunConfig and name in cls.__dict__.get("__annotations__", {})
                        and cls.__dataclass_fields__[name].metadata)
                sym = f", CONFIG_{cls().model.upper()}_{name.upper()}" if mine else ""
                raise ConfigError(f"{name}={getattr(obj, name)!r}: unknown "
                                  f"{name.replace('_', ' ')}; choose one of {', '.join(allowed)} "
                                  f"(--{name.replace('_', '-')}{sym})")

    # ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def semantic_dict(self) -> dict:
        """What a run computes: every field but NON_SEMANTIC, and the LATER fields only where
        they differ from their default (so adding a setting keeps every existing run id)."""
        d = {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC}
        for name in LATER:      # a model's own field only where the model has it
            f = type(self).__dataclass_fields__.get(name)
            if f is not None and d.get(name) == f.default:
                d.pop(name, None)
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.semantic_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def run_id(self) -> str:
        s = "0" if self.pruning_method == "none" else f"{self.target_sparsity:g}"
        seed = f"_seed{self.seed}" if self.id_seed else ""
        return f"{self.model}_{self.optimizer}_{self.pruning_method}_s{s}{seed}-{self.config_hash()}"

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


def data_path(cfg) -> str:
    """How a run's training batches are made, in the names of scripts/bench/vision.py's rows
    (data_path in results/benchmarks.csv): gpu (data_on_gpu), gpu-decode (resnet50's
    decode=gpu), pil (an image folder decoded by PIL in DataLoader workers), workers (the
    data set's own pipeline in DataLoader workers)."""
    if cfg.data_on_gpu:
        return "gpu"
    if getattr(cfg, "decode", "pil") == "gpu":
        return "gpu-decode"
    return "pil" if getattr(cfg, "dataset", "") == "imagenet" else "workers"


def model_part(model: str, part: str, attr: str, fix: str):
    """<model>/<part>.py's `attr`, looked up by name (lib/ never imports a model folder by
    itself); a missing file is a ConfigError naming it and `fix`."""
    try:
        return getattr(importlib.import_module(f"{model}.{part}"), attr)
    except ModuleNotFoundError as e:
        if e.name not in (model, f"{model}.{part}"):
            raise
        raise ConfigError(f"model {model!r} has no {model}/{part}.py; {fix}") from None


def config_class(model: str):
    """The Config dataclass of a model folder (<model>/config.py)."""
    return model_part(model, "config", "Config", f"unselect CONFIG_MODEL_{model.upper()} or "
                      f"add the model folder")


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
