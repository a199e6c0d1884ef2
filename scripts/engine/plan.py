"""Turn .config into the test matrix: a list of fully resolved run configs.

.config is read only through kconfiglib. For each selected model x optimizer x pruning
method x sparsity level, every field of the model's Config (<model>/config.py) is taken
from the first Kconfig symbol that .config sets, in this order:

    <MODEL>_<OPTIMIZER>_<FIELD>   e.g. CONFIG_LENET5_SGD_LR   (per-optimizer override)
    <MODEL>_<FIELD>               e.g. CONFIG_LENET5_BATCH_SIZE
    <FIELD>                       e.g. CONFIG_PRUNING_SCOPE, CONFIG_PRECISION
    the Config default

Combinations that make no sense are skipped, each with its reason. Planning is pure:
the same .config always gives the same runs and run ids.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

import kconfiglib

from lib import settings
from lib.paths import MATRICES, REPO
from lib.runconfig import (OPTIMIZERS, PRUNING_METHODS, ConfigError, RunConfig,
                           combination_reason, config_class)
from lib.settings import parse_kconfig


@dataclass
class Plan:
    name: str
    runs: list = field(default_factory=list)        # RunConfig objects
    skipped: list = field(default_factory=list)     # (description, reason)
    hw: str = "cpu"
    jobs: int = 0                                   # CONFIG_JOBS (0 = auto)
    executor: dict = field(default_factory=lambda: {"kind": "local"})


SLURM_SYMBOLS = {"partition": str, "account": str, "qos": str, "time_limit": str, "nodes": int,
                 "cpus_per_gpu": int, "mem_per_gpu": str, "signal": str, "signal_lead": int,
                 "max_requeues": int, "setup": str, "sbatch_args": str, "poll_interval": int,
                 "detach": bool, "torchrun_per_node": bool}


def matrix_dir_for(name: str, records: list) -> str:
    """results/matrices/<name>-<hash8>: the hash is of the planned run ids."""
    h = hashlib.sha256(" ".join(sorted(r["run_id"] for r in records)).encode()).hexdigest()[:8]
    return os.path.join(MATRICES, f"{name}-{h}")


def executor_settings(kconf) -> dict:
    """CONFIG_EXECUTOR_* and the CONFIG_SLURM_* symbols, as plan.json keeps them."""
    if not _set(kconf, "EXECUTOR_SLURM"):
        return {"kind": "local"}
    out = {"kind": "slurm"}
    for key, typ in SLURM_SYMBOLS.items():
        v = _set(kconf, f"SLURM_{key.upper()}")
        out[key] = bool(v) if typ is bool else typ(v) if v not in (None, "") else typ()
    return out


def rejected_assignments(kconf) -> list[str]:
    """What Kconfig refused from the loaded file: warnings (undefined symbol, bad value)
    and values it silently replaced (out of range, unmet dependency)."""
    bad = [w.replace("\n", " ").replace("warning: ", "") for w in kconf.warnings]
    for sym in kconf.unique_defined_syms:
        if sym.choice and sym.user_value == 2 and sym.tri_value != 2 and not sym.visibility:
            # a choice member asked for but hidden: Kconfig takes the choice's default
            deps = kconfiglib.expr_str(sym.direct_dep).replace(" && <choice>", "")
            if not sym.choice.visibility:
                deps += f" && {kconfiglib.expr_str(sym.choice.direct_dep)}"
            chosen = sym.choice.selection
            bad.append(f"CONFIG_{sym.name}=y was rejected: its dependencies are not met "
                       f"({deps}); Kconfig used "
                       f"{'CONFIG_' + chosen.name if chosen else 'none of its choice'}; "
                       f"pick a preset where they hold or drop the line")
            continue
        if sym.user_value is None or sym.choice or not any(n.prompt for n in sym.nodes):
            continue
        want = sym.user_value
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            want = kconfiglib.TRI_TO_STR[want]
        if str(want) != sym.str_value:
            why = (f"outside its range" if sym.orig_type in (kconfiglib.INT, kconfiglib.HEX)
                   and sym.visibility else f"its dependencies are not met "
                   f"({kconfiglib.expr_str(sym.direct_dep)})")
            bad.append(f"CONFIG_{sym.name}={want} was rejected: {why}; Kconfig used "
                       f"{sym.str_value or 'n'}")
    return bad


def check_text(config_path: str) -> None:
    """A .config is a text file of CONFIG_ lines; anything else (a corrupted or binary file)
    is one error naming the file and the fix, not a traceback from kconfiglib."""
    with open(config_path, "rb") as f:
        raw = f.read()
    try:
        raw.decode("utf-8")
        bad = raw.find(b"\0")
    except UnicodeDecodeError as e:
        bad = e.start
    if bad >= 0:
        raise ConfigError(f"{config_path} is not a Kconfig text file (byte {bad} is not text); "
                          f"replace it with `make defconfig-<name>` (it keeps the bad file as "
                          f"{os.path.basename(config_path)}.old) or restore it")


def load_kconfig(config_path: str) -> kconfiglib.Kconfig:
    """Parse Kconfig and load config_path; anything Kconfig rejects is an error naming the
    symbol and the fix."""
    if not os.path.exists(config_path):
        raise ConfigError(f"{config_path} does not exist; run `make defconfig-<name>` "
                          f"(see `make list-defconfigs`) or `make menuconfig`")
    check_text(config_path)
    kconf = parse_kconfig()
    try:
        kconf.load_config(config_path)
    except kconfiglib.KconfigError as e:
        raise ConfigError(f"{config_path}: {str(e).splitlines()[0]}; replace it with "
                          f"`make defconfig-<name>` or fix it with `make menuconfig`")
    bad = rejected_assignments(kconf)
    if bad:
        raise ConfigError(f"{config_path}: {bad[0]} -- fix it with `make menuconfig` or "
                          f"`make olddefconfig`")
    return kconf


def _set(kconf, name: str):
    """The symbol's value if .config sets it (visible with a value), else None."""
    sym = kconf.syms.get(name)
    if sym is None or not sym.config_string:
        return None
    if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        return sym.str_value == "y"
    return sym.str_value


def parse_sparsities(text: str) -> list[float]:
    levels = []
    for tok in [t for t in re.split(r"[,\s]+", text.strip()) if t]:
        try:
            s = float(tok)
        except ValueError:
            raise ConfigError(f"CONFIG_MATRIX_SPARSITY_LEVELS: {tok!r} is not a number; use "
                              f"fractions like \"0.5 0.7\"") from None
        if not 0.0 < s < 1.0:
            raise ConfigError(f"CONFIG_MATRIX_SPARSITY_LEVELS: {tok} is outside (0, 1); a "
                              f"sparsity is a fraction, e.g. 0.7 for 70 percent")
        levels.append(s)
    return sorted(set(levels))


def parse_seeds(text: str, source: str = "CONFIG_MATRIX_SEEDS") -> list[int]:
    """The matrix's seeds, in the order given; each an integer in [0, 2^31)."""
    seeds = []
    for tok in [t for t in re.split(r"[,\s]+", text.strip()) if t]:
        try:
            seed = int(tok, 10)
        except ValueError:
            raise ConfigError(f"{source}: {tok!r} is not an integer seed; use a list like "
                              f"\"1 2 3\"") from None
        if not 0 <= seed < 2**31:
            raise ConfigError(f"{source}: {seed} is outside [0, 2147483647]")
        if seed in seeds:
            raise ConfigError(f"{source}: seed {seed} is listed twice")
        seeds.append(seed)
    if not seeds:
        raise ConfigError(f"{source} is empty; give at least one seed, e.g. \"1\"")
    return seeds


def resolve(kconf, model: str, optimizer: str, method: str, sparsity: float,
            overrides: dict) -> RunConfig:
    cls = config_class(model)
    values, source = {}, {}
    for name in cls.field_types():
        for sym in (f"{model}_{optimizer}_{name}", f"{model}_{name}", name):
            v = _set(kconf, sym.upper())
            if v is not None:
                values[name], source[name] = v, f"CONFIG_{sym.upper()}"
                break
    values.update(model=model, optimizer=optimizer, pruning_method=method,
                  target_sparsity=sparsity if method != "none" else 0.0)
    values.update(overrides)
    try:
        return cls.from_dict(values, source=".config").validate()
    except ConfigError as e:
        where = source.get(str(e).split("=", 1)[0])   # messages start with "<field>=<value>"
        raise ConfigError(f"{where + ': ' if where else ''}{e}") from None


def plan(config_path: str, overrides: dict | None = None) -> Plan:
    """overrides: run-config fields set on the make command line (TIME -> time_budget, ...),
    and "seeds" (SEEDS="1 2 3"), which replaces CONFIG_MATRIX_SEEDS."""
    kconf = load_kconfig(config_path)
    overrides = dict(overrides or {})
    p = Plan(name=_set(kconf, "MATRIX_NAME") or "custom", hw=_set(kconf, "HW_NAME") or "cpu",
             jobs=int(_set(kconf, "JOBS") or 0), executor=executor_settings(kconf))
    models = [m for m in settings.models(kconf) if _set(kconf, f"MODEL_{m.upper()}")]
    optimizers = [o for o in OPTIMIZERS if _set(kconf, f"MATRIX_OPTIMIZER_{o.upper()}")]
    methods = [m for m in PRUNING_METHODS if _set(kconf, f"MATRIX_PRUNING_{m.upper()}")]
    if not models:
        raise ConfigError(f"{config_path} selects no model; enable one under Models in "
                          f"`make menuconfig` (e.g. CONFIG_MODEL_LENET5=y)")
    if not optimizers:
        raise ConfigError(f"{config_path} selects no optimizer; enable one of "
                          f"CONFIG_MATRIX_OPTIMIZER_* in `make menuconfig`")
    if not methods:
        raise ConfigError(f"{config_path} selects no pruning method; enable CONFIG_MATRIX_"
                          f"PRUNING_NONE or another CONFIG_MATRIX_PRUNING_*")
    levels = parse_sparsities(_set(kconf, "MATRIX_SPARSITY_LEVELS") or "")
    if any(m != "none" for m in methods) and not levels:
        raise ConfigError("CONFIG_MATRIX_SPARSITY_LEVELS is empty but a pruning method is "
                          "selected; set levels like \"0.5 0.7\"")
    models_dir = overrides.pop("models_root", None) or _set(kconf, "MODELS_DIR") or ""
    given = overrides.pop("seeds", None)
    seeds = (parse_seeds(str(given), "SEEDS") if given is not None
             else parse_seeds(_set(kconf, "MATRIX_SEEDS") if _set(kconf, "MATRIX_SEEDS") is not None
                              else str(RunConfig.seed)))
    for model in models:
        for opt in optimizers:
            for method in methods:
                reason = combination_reason(opt, method)
                if reason:
                    p.skipped.append((f"{model} {opt} {method}", reason))
                    continue
                for s in ([0.0] if method == "none" else levels):
                    for seed in seeds:
                        cfg = resolve(kconf, model, opt, method, s,
                                      {**overrides, "seed": seed, "id_seed": len(seeds) > 1})
                        cfg.trackio_project = p.name
                        if models_dir:
                            root = models_dir if os.path.isabs(models_dir) else os.path.join(REPO, models_dir)
                            cfg.models_dir = os.path.join(root, cfg.run_id())
                        p.runs.append(cfg)
    ids = [c.run_id() for c in p.runs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ConfigError(f"two runs resolve to the same config ({sorted(dup)[0]}); remove the "
                          f"duplicate selection")
    return p
