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

from lib.runconfig import ConfigError, coerce


def _parser(config_class) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=f"train {config_class().model or 'a model'}; "
                                "every setting below can also come from --config JSON",
                                allow_abbrev=False)
    p.add_argument("--config", action="append", default=[], metavar="JSON",
                   help="a resolved run config (written by the planner)")
    p.add_argument("--dry-run", action="store_true",
                   help="build model/optimizer/pruner, run two steps on a tiny batch, report")
    p.add_argument("--dry-run-report", default="", metavar="JSON", help=argparse.SUPPRESS)
    defaults = config_class()
    for name, typ in config_class.field_types().items():
        flag = "--" + name.replace("_", "-")
        if typ is bool:
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction,
                           help=f"(default {getattr(defaults, name)})")
        else:
            p.add_argument(flag, dest=name, default=None, metavar=typ.__name__.upper(),
                           help=f"(default {getattr(defaults, name)!r})")
    return p


def parse(config_class, argv=None):
    """Return ("train", cfg) or ("dry-run", (report_path, [cfg, ...]))."""
    p = _parser(config_class)
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
