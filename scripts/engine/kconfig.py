"""defconfig handling through kconfiglib: apply one, list them, check them all.

  python -m scripts.engine.kconfig defconfig <name>   # defconfigs/<name> -> .config
  python -m scripts.engine.kconfig list
  python -m scripts.engine.kconfig check               # every defconfig loads without a warning
  python -m scripts.engine.kconfig set GPUS=2 GPT2_MAX_STEPS=300   # change .config (like Linux's
                                                # scripts/config); refused values are errors
"""
from __future__ import annotations

import os
import sys

import kconfiglib

from lib.paths import REPO
from scripts.engine import run_main
from scripts.engine.plan import (ConfigError, check_text, load_kconfig, parse_kconfig,
                                 rejected_assignments)
DEFCONFIGS = os.path.join(REPO, "defconfigs")


def config_path() -> str:
    """The .config that defconfig and set write: $KCONFIG_CONFIG (as in Linux and
    kconfiglib's own tools) or .config in the repository."""
    return os.environ.get("KCONFIG_CONFIG") or os.path.join(REPO, ".config")


def names() -> list[str]:
    return sorted(f for f in os.listdir(DEFCONFIGS) if not f.startswith(".") and not f.endswith(".md"))


def describe(name: str) -> str:
    with open(os.path.join(DEFCONFIGS, name)) as f:
        first = f.readline().strip()
    return first.lstrip("# ") if first.startswith("#") else ""


def load(name: str) -> kconfiglib.Kconfig:
    """Parse Kconfig and apply defconfigs/<name>; any warning is an error."""
    kconf = parse_kconfig()
    kconf.load_config(os.path.join(DEFCONFIGS, name))
    bad = rejected_assignments(kconf)
    if bad:
        raise SystemExit(f"error: defconfigs/{name}: {bad[0]} -- fix the defconfig "
                         f"(see `make menuconfig`)")
    return kconf


def keep_unreadable(path: str) -> None:
    """A .config that is not text cannot be compared with or backed up by kconfiglib's
    write_config: move it to .config.old here so a defconfig always replaces it."""
    try:
        check_text(path)
    except FileNotFoundError:
        pass
    except ConfigError:
        os.replace(path, path + ".old")
        print(f"{os.path.relpath(path, REPO)} was not a text file: kept as "
              f"{os.path.relpath(path, REPO)}.old", file=sys.stderr)


def main(argv) -> int:
    try:
        return command(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def command(argv) -> int:
    cmd = argv[1] if len(argv) > 1 else "list"
    if cmd == "list":
        for n in names():
            print(f"  {n:<42} {describe(n)}")
        return 0
    if cmd == "defconfig":
        name = argv[2] if len(argv) > 2 else ""
        if name not in names():
            print(f"error: no defconfig named '{name}'; valid names (make defconfig-<name>):",
                  file=sys.stderr)
            for n in names():
                print(f"  {n}", file=sys.stderr)
            return 2
        kconf = load(name)
        keep_unreadable(config_path())
        kconf.write_config(config_path(),
                           header=f"# generated from defconfigs/{name}; edit with make menuconfig\n")
        print(f"applied defconfigs/{name} -> {os.path.relpath(config_path(), REPO)}")
        return 0
    if cmd == "check":
        for n in names():
            load(n)
        print(f"{len(names())} defconfigs load cleanly")
        return 0
    if cmd == "set":
        set_values(config_path(), argv[2:])
        return 0
    print(f"error: unknown command {cmd}", file=sys.stderr)
    return 2


def set_values(config_path: str, assignments: list[str]) -> None:
    """Apply SYMBOL=VALUE assignments (CONFIG_ prefix optional; bools take y/n, a choice
    member y selects it) to config_path through kconfiglib and write it back. A value Kconfig
    refuses (unknown symbol, out of range, unmet dependency) is an error naming it; the file
    is then left as it was."""
    kconf = load_kconfig(config_path)
    names = []
    for a in assignments:
        name, sep, value = a.partition("=")
        name = name.removeprefix("CONFIG_")
        sym = kconf.syms.get(name)
        if not sep or sym is None or not sym.nodes:
            raise ConfigError(f"{a!r}: expected SYMBOL=VALUE with a symbol Kconfig defines")
        if not any(n.prompt for n in sym.nodes):
            raise ConfigError(f"CONFIG_{name} has no prompt: Kconfig derives it from other "
                              "symbols; set those instead (see `make menuconfig`)")
        names.append(name)
        if not sym.set_value(value.strip('"')):
            raise ConfigError(f"CONFIG_{name}={value}: not a valid value for this "
                              f"{kconfiglib.TYPE_TO_STR[sym.orig_type]} symbol")
    # values of other symbols that the change hides (GPU memory once HW_CPU is chosen) drop,
    # as in `make olddefconfig`; a refused value of an assigned symbol is an error
    bad = [b for b in rejected_assignments(kconf) if b.split("=")[0] in
           {f"CONFIG_{n}" for n in names}]
    if bad:
        raise ConfigError(f"{bad[0]}; .config left unchanged")
    kconf.write_config(config_path, header="# edited by scripts/engine/kconfig.py set; edit with "
                                           "make menuconfig\n")
    print(f"set {' '.join(assignments)} in {os.path.relpath(config_path, REPO)}")


if __name__ == "__main__":
    run_main(main, sys.argv)
