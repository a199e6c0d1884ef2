"""The measured noise of a matrix and the seeds a difference needs, written into docs.

  make power-table MATRIX=<folder>        rewrite docs/statistics.md's measured block
  python -m scripts.engine.power_table results/archive/<date>-default-<hash> [--check]

The folder is a matrix's (results/matrices/<name>-<hash>) or its archive copy: its
cells.csv (a cell's seeds and run ids) and summary.csv (each run's metric) give every run's
value by cell and seed. From them (scripts/engine/stats.py, scipy):

- the noise floor: the pooled standard deviation of the dense cells;
- s_d, the pooled standard deviation of the per-seed differences between each pruned cell
  and the dense cell of its optimizer: the spread the paired t-test sees;
- for effects of a few metric points, the seeds per cell a paired t-test (two-sided, alpha
  0.05) needs for power 0.8 and 0.9 at that s_d (stats.seeds_needed).

The block between BEGIN and END in the document is replaced; the rest is left alone.
Date, host, commit and torch come from the runs' status.json where results/runs still
has them, else from the block already in the document. --check compares instead of writing
and fails where the document's block is not what the folder gives.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import time

from lib import fsio
from lib.paths import REPO, RUNS
from lib.runconfig import ConfigError
from scripts.engine import query, run_main, stats

BEGIN = "<!-- power-table: begin (make power-table; scripts/engine/power_table.py) -->"
END = "<!-- power-table: end -->"
EFFECTS = (0.25, 0.5, 1.0, 2.0, 3.0)        # metric points
DOC = os.path.join(REPO, "docs", "statistics.md")


def read_cells(folder: str) -> list[dict]:
    """One dict per cell: model, optimizer, pruning_method, target_sparsity, metric and
    `values` {seed: metric value}, from the folder's cells.csv and summary.csv."""
    paths = [os.path.join(folder, f) for f in ("cells.csv", "summary.csv")]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} missing: give a matrix folder (results/matrices/"
                          f"<name>-<hash>) or its archive copy that has both")
    with open(paths[1]) as f:
        value = {r["run_id"]: float(r["primary_value"]) for r in csv.DictReader(f)
                 if r["status"] == "done" and r["primary_value"] not in ("", None)}
    out = []
    with open(paths[0]) as f:
        for c in csv.DictReader(f):
            seeds, ids = c["seeds"].split(), c["run_ids"].split()
            out.append({"model": c["model"], "optimizer": c["optimizer"],
                        "pruning_method": c["pruning_method"],
                        "target_sparsity": float(c["target_sparsity"]),
                        "metric": c["primary_metric"],
                        "values": {int(s): value[i] for s, i in zip(seeds, ids) if i in value},
                        "run_ids": ids})
    return out


def measure(cells: list[dict]) -> dict:
    """noise floor (pooled std of dense cells), s_d (pooled std of the pruned cells' per-seed
    differences to their optimizer's dense cell), their degrees of freedom, the seeds."""
    described = [{**c, **stats.describe(list(c["values"].values()))} for c in cells]
    dense = [c for c in described if c["pruning_method"] == "none"]
    floor = stats.noise_floor(described)
    floor_dof = sum(c["n"] - 1 for c in dense if c["n"] >= 2)
    base = {(c["model"], c["optimizer"]): c["values"] for c in dense}
    num, dof = 0.0, 0
    for c in described:
        ref = base.get((c["model"], c["optimizer"]))
        if c["pruning_method"] == "none" or ref is None:
            continue
        common = sorted(set(c["values"]) & set(ref))
        if len(common) >= 2:
            d = stats.describe([c["values"][s] - ref[s] for s in common])
            num += (d["n"] - 1) * d["std"] ** 2
            dof += d["n"] - 1
    seeds = sorted({s for c in cells for s in c["values"]})
    return {"noise_floor": floor, "floor_dof": floor_dof, "dense_cells": len(dense),
            "s_d": math.sqrt(num / dof) if dof else float("nan"), "s_d_dof": dof,
            "pruned_cells": len(described) - len(dense), "seeds": seeds,
            "metric": cells[0]["metric"] if cells else ""}


def table(m: dict, effects=EFFECTS) -> list[str]:
    """The measured power table: effect in metric points, in units of s_d, seeds needed."""
    rows = ["| effect (points) | effect / s_d | seeds for power 0.8 | seeds for power 0.9 |",
            "|---|---|---|---|"]
    for e in effects:
        rows.append(f"| {e:g} | {e / m['s_d']:.2f} | {stats.seeds_needed(e, m['s_d'])} | "
                    f"{stats.seeds_needed(e, m['s_d'], power=0.9)} |")
    return rows


def provenance(cells: list[dict], runs_dir: str = RUNS) -> str | None:
    """'<date>, host <h>, commit <c>[ (dirty)], torch <v>' from the runs' status.json, or None
    when results/runs no longer has them."""
    recs = [fsio.read_json(os.path.join(runs_dir, i, "status.json"), None)
            for c in cells for i in c["run_ids"]]
    recs = [r for r in recs if r and r.get("environment")]
    if not recs:
        return None
    env = recs[-1]["environment"]
    commits = sorted({r["environment"].get("git_commit", "?")[:12] for r in recs})
    dirty = any(r["environment"].get("git_dirty") for r in recs)
    day = time.strftime("%Y-%m-%d", time.gmtime(max(r.get("stopped", 0) for r in recs)))
    return (f"{day}, host {env.get('host', '?')}, commit {', '.join(commits)}"
            f"{' (dirty tree)' if dirty else ''}, torch {env.get('torch', '?')}")


def block(folder: str, cells: list[dict], m: dict, prov: str) -> list[str]:
    name = os.path.relpath(os.path.abspath(folder), REPO)
    return [BEGIN, "",
            f"Measured: `{name}` ({len(m['seeds'])} seeds: {' '.join(map(str, m['seeds']))}), "
            f"{prov}.", "",
            f"- noise floor: {m['noise_floor']:.2f} {m['metric']} points (pooled std of the "
            f"{m['dense_cells']} dense cells, {m['floor_dof']} degrees of freedom)",
            f"- s_d: {m['s_d']:.2f} points (pooled std of the per-seed differences of the "
            f"{m['pruned_cells']} pruned cells to their optimizer's dense cell, "
            f"{m['s_d_dof']} degrees of freedom)", "",
            *table(m), "", END]


def old_provenance(text: str) -> str | None:
    hit = re.search(r"^Measured: `[^`]*` \([^)]*\), (.*)\.$", current_block(text), re.M)
    return hit.group(1) if hit else None


def current_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ConfigError(f"the document has no block between {BEGIN!r} and {END!r}; add the "
                          f"two lines where the measured table goes")
    return text[text.index(BEGIN):text.index(END) + len(END)]


def render(folder: str, doc_text: str, runs_dir: str = RUNS) -> str:
    """doc_text with its block rewritten from the folder."""
    cells = read_cells(folder)
    if not cells:
        raise ConfigError(f"{folder}: no finished cells in cells.csv")
    m = measure(cells)
    if not m["s_d_dof"]:
        raise ConfigError(f"{folder}: no pruned cell shares two seeds with its dense cell; run "
                          f"the matrix with SEEDS=\"1 2 3\"")
    prov = provenance(cells, runs_dir) or old_provenance(doc_text) or "provenance unknown"
    return doc_text.replace(current_block(doc_text), "\n".join(block(folder, cells, m, prov)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="matrix folder or its archive copy (cells.csv, summary.csv)")
    ap.add_argument("--doc", default=DOC)
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    args = ap.parse_args(argv)
    try:
        folder = args.folder if os.path.isdir(args.folder) else query.matrix_dir(args.folder)
        text = open(args.doc).read()
        new = render(folder, text)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{args.doc}: the measured block differs from what {folder} gives; run "
                  f"make power-table MATRIX={folder}", file=sys.stderr)
            return 1
        print(f"{args.doc}: the measured block matches {folder}")
        return 0
    if new != text:
        fsio.atomic_write_text(args.doc, new)
    print(current_block(new))
    return 0


if __name__ == "__main__":
    run_main(main)
