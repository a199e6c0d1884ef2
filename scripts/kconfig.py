"""defconfig handling through kconfiglib: apply one, list them, check them all.

  python scripts/kconfig.py defconfig <name>   # defconfigs/<name> -> .config
  python scripts/kconfig.py list
  python scripts/kconfig.py check               # every defconfig loads without a warning
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from scripts.plan import parse_kconfig, rejected_assignments  # noqa: E402
DEFCONFIGS = os.path.join(REPO, "defconfigs")


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


def main(argv) -> int:
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
        kconf.write_config(os.path.join(REPO, ".config"),
                           header=f"# generated from defconfigs/{name}; edit with make menuconfig\n")
        print(f"applied defconfigs/{name} -> .config")
        return 0
    if cmd == "check":
        for n in names():
            load(n)
        print(f"{len(names())} defconfigs load cleanly")
        return 0
    print(f"error: unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
