"""The one table of benchmark rows: results/benchmarks.csv, one row per measurement with its
device, versions, commit and date on the row (Liger-Kernel keeps its benchmark data so).
Benchmarks append to it (`--table results/benchmarks.csv`); reports of single runs are
build outputs, the table and git's history are the record.

  python -m scripts.bench.table --from results/kernels/bench-*.json   # append old reports
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess

from lib.paths import BENCHMARKS as TABLE, REPO

COLUMNS = ("date", "device", "torch", "triton", "commit", "report", "op", "case", "layout",
           "shape", "dtype", "pass", "ms", "torch_ms", "ratio", "tflops", "torch_tflops",
           # training throughput rows (scripts/bench/vision.py)
           "model", "batch", "workers", "data_path", "compile_mode", "trainer_img_s",
           "bare_img_s")


def commit_of(path: str | None = None) -> str:
    """The commit that measured: HEAD (with -dirty), or the one that added an old report."""
    git = ["git", "-C", REPO]
    if path:
        out = subprocess.run([*git, "log", "--diff-filter=A", "--format=%h", "--", path],
                             capture_output=True, text=True).stdout.split()
        return out[-1] if out else ""
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if head and dirty else "")


def widen(path: str) -> None:
    """Give a table written before columns were added the current header (its rows keep
    their values, the new columns empty); a column this module does not know is an error."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
        if tuple(header) == COLUMNS:
            return
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            raise ValueError(f"{path} has columns {unknown} that scripts/bench/table.py's "
                             f"COLUMNS lacks; add them there")
        f.seek(0)
        rows = list(csv.DictReader(f))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append(rows: list, meta: dict, report: str, path: str = TABLE, commit: str | None = None):
    """Append rows (dicts of a benchmark's JSON report) with the run's meta to the table."""
    commit = commit_of() if commit is None else commit
    new = not os.path.exists(path)
    if not new:
        widen(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            row = {"date": meta.get("date", ""), "device": meta.get("gpu", meta.get("device", "")),
                   "torch": meta.get("torch", ""), "triton": meta.get("triton", ""),
                   "commit": commit, "report": report, **r}
            if isinstance(row.get("shape"), (list, tuple)):
                row["shape"] = "x".join(map(str, row["shape"]))
            w.writerow(row)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="reports", nargs="+", required=True, metavar="JSON")
    ap.add_argument("--table", default=TABLE)
    args = ap.parse_args(argv)
    for p in args.reports:
        with open(p) as f:
            doc = json.load(f)
        meta = doc.get("meta", {})
        append(doc["rows"], meta, os.path.basename(p), args.table,
               commit=meta.get("commit") or commit_of(os.path.relpath(os.path.abspath(p), REPO)))
    print(f"appended {len(args.reports)} report(s) to {os.path.relpath(args.table, REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
