"""The settings as Kconfig declares them: the parsed tree, the symbol that sets a run-config
field, and its help text.

Each fact has one owner. The run-config dataclass (lib/runconfig.py and <model>/config.py)
owns a setting's default, choices and range (field metadata, see runconfig.setting). Kconfig
owns the menu, the help text and the defaults of the hardware presets that differ from the
dataclass (`default 8 if HW_CPU`); its unconditional default equals the dataclass default,
which tests/lib/test_settings.py checks for every symbol. `--help` of every train.py shows
the Kconfig help, so a setting is described once.

Field `foo` of model `m` is set by the first of CONFIG_<M>_<OPTIMIZER>_FOO (a per-optimizer
override), CONFIG_<M>_FOO and CONFIG_FOO that exists (scripts/engine/plan.py).
"""
from __future__ import annotations

import functools
import os

import kconfiglib

from lib.paths import REPO
from lib.runconfig import ConfigError, config_class


def parse_kconfig() -> kconfiglib.Kconfig:
    """The whole Kconfig tree, with undefined-symbol assignments reported as warnings."""
    os.environ["srctree"] = REPO
    kconf = kconfiglib.Kconfig(os.path.join(REPO, "Kconfig"), warn_to_stderr=False)
    if kconf.warnings:
        raise ConfigError(f"Kconfig itself warns: {kconf.warnings[0]}")
    kconf.warn_assign_undef = True
    return kconf


def models(kconf) -> list[str]:
    """The model registry: every `config MODEL_<NAME>` in Kconfig order, as <name>; each is
    a folder with config.py and train.py."""
    return [s.name[len("MODEL_"):].lower() for s in kconf.unique_defined_syms
            if s.name.startswith("MODEL_")]


def symbol(kconf, model: str, field: str):
    """The symbol that sets `field` for `model` (CONFIG_<MODEL>_<FIELD>, else CONFIG_<FIELD>),
    or None when no Kconfig symbol does."""
    for name in (f"{model}_{field}".upper(), field.upper()):
        sym = kconf.syms.get(name)
        if sym is not None and sym.nodes:
            return sym
    return None


def help_text(sym) -> str:
    """The symbol's help, one paragraph; a derived string symbol (the value of a choice)
    takes its choice's help."""
    nodes = [n for n in sym.nodes if n.help]
    if not nodes:
        member = next((c for v, c in sym.nodes[0].orig_defaults
                       if isinstance(c, kconfiglib.Symbol) and c.choice), None)
        nodes = [n for n in (member.choice.nodes if member else []) if n.help]
    return " ".join(nodes[0].help.split()) if nodes else ""


@functools.lru_cache(maxsize=None)
def field_help(model: str) -> dict:
    """{field: (CONFIG_ name, help text)} for every field of `model` that Kconfig sets."""
    kconf = parse_kconfig()
    out = {}
    for name in config_class(model).field_types():
        sym = symbol(kconf, model, name)
        if sym is not None:
            out[name] = (f"CONFIG_{sym.name}", help_text(sym))
    return out

