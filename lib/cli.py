"""Command line of every train.py: a flag per config field, or --config <run>/config.json.

  python lenet5/train.py --optimizer adamwprune --pruning-method state --target-sparsity 0.7
  python lenet5/train.py --config results/runs/<run>/config.json
  python lenet5/train.py --dry-run --config a.json --config b.json --dry-run-report out.json

Flags given beside --config override its values. An unknown flag fails with a suggestion.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys

from lib import settings
from lib.runconfig import ConfigError, coerce, meta


def _describe(config_class, name: str, default, helps: dict) -> str:
    """A flag's help: the Kconfig help of the symbol that sets it (one text for menuconfig
    and --help), else the field's own; then its default and, where Kconfig sets it, the
    symbol."""
    sym, text = helps.get(name, (None, meta(config_class, name)["help"]))
    m = meta(config_class, name)
    extra = [f"default {default!r}"]
    if m["choices"]:
        extra.append("one of " + ", ".join(m["choices"]))
    if sym:
        extra.append(sym)
    return f"{text} ({'; '.join(extra)})".replace("%", "%%")


def _parser(config_class, with_help: bool = False) -> argparse.ArgumentParser:
    """with_help: read the Kconfig tree for the flags' help texts (only --help needs them)."""
    p = argparse.ArgumentParser(description=f"train {config_class().model or 'a model'}; "
                                "every setting below can also come from --config JSON",
                                allow_abbrev=False)
    p.add_argument("--config", action="append", default=[], metavar="JSON",
                   help="a resolved run config (written by the planner)")
    p.add_argument("--dry-run", action="store_true",
                   help="build model/optimizer/pruner, run two steps on a tiny batch, report")
    p.add_argument("--dry-run-report", default="", metavar="JSON", help=argparse.SUPPRESS)
    defaults = config_class()
    helps = settings.field_help(defaults.model) if with_help else {}
    for name, typ in config_class.field_types().items():
        flag = "--" + name.replace("_", "-")
        text = _describe(config_class, name, getattr(defaults, name), helps) if with_help else None
        if typ is bool:
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction,
                           help=text)
        else:
            p.add_argument(flag, dest=name, default=None, metavar=typ.__name__.upper(), help=text)
    return p


def help_text(config_class) -> str:
    return _parser(config_class, with_help=True).format_help()


def parse(config_class, argv=None):
    """Return ("train", cfg) or ("dry-run", (report_path, [cfg, ...]))."""
    argv = sys.argv[1:] if argv is None else argv
    p = _parser(config_class, with_help=any(a in ("-h", "--help") for a in argv))
    args, unknown = p.parse_known_args(argv)
    if unknown:
        flags = [o for a in p._actions for o in a.option_strings]
        bad = unknown[0].split("=")[0]
        near = difflib.get_close_matches(bad, flags, n=1)
        hint = f"; did you mean {near[0]}?" if near else "; see --help"
        raise ConfigError(f"unknown option {bad}{hint}")
    types = config_class.field_types()
    overrides = {k: coerce(k, v, types[k], "the command line")
                 for k, v in vars(args).items() if k in types and v is not None}

    def make(base: dict):
        d = dict(base)
        d.update(overrides)
        d.setdefault("model", config_class().model)
        return config_class.from_dict(d).validate()

    bases = []
    for path in args.config:
        try:
            with open(path) as f:
                bases.append(json.load(f))
        except FileNotFoundError:
            raise ConfigError(f"--config {path}: no such file; plan runs with `make` or drop --config")
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {path} is not valid JSON ({e}); re-plan with `make FORCE=1`")
    if args.dry_run:
        return "dry-run", (args.dry_run_report, [make(b) for b in (bases or [{}])])
    if len(bases) > 1:
        raise ConfigError("--config may be given once for training (several only with --dry-run)")
    return "train", make(bases[0] if bases else {})
