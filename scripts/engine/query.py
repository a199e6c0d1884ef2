"""Query and compare finished work, from the files on disk alone:

  make runs [MATRIX=<name or folder>] [FILTER="pruning=state sparsity=0.7"] [FORMAT=csv]
                                              the runs (of one matrix), a line each
  make diffconfig A=<run or matrix> B=<...>   what differs between two runs' resolved
                                              configs, or two matrices' .configs
  make compare A=<run or matrix> B=<...>      two runs: metric, steps, config; two matrices:
                                              their common cells side by side (mean and 95%
                                              interval, sparsity, throughput), B - A with its
                                              95% interval and p-value (scripts/engine/stats.py);
                                              and results/compare/<A>_vs_<B>.png, their loss
                                              curves overlaid

A run is named by its id or a unique prefix, a matrix by its folder under results/matrices
(<name>-<hash>), a unique prefix of one, or its name (the newest of that name). An unknown
or ambiguous name is one line listing the close matches.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import os
import sys
import time

from lib import fsio
from lib.runconfig import NON_SEMANTIC, ConfigError
from lib.paths import MATRICES, REPO, RESULTS, RUNS
from scripts.engine import plots, report, run_main, stats


def _pick(kind: str, name: str, names: list, suggest: list | None = None) -> str:
    hits = [n for n in names if n == name] or [n for n in names if n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    near = hits[:5] or difflib.get_close_matches(name, suggest or names, n=5, cutoff=0.3)
    what = "matches several" if len(hits) > 1 else "matches nothing"
    raise ConfigError(f"{kind} {name!r} {what}; close: {', '.join(near) or 'none'} "
                      f"(list them with `make runs`)")


def run_id(name: str) -> str:
    names = sorted(os.listdir(RUNS)) if os.path.isdir(RUNS) else []
    return _pick("run", name, names)


def matrix_dir(name: str) -> str:
    names = sorted(d for d in (os.listdir(MATRICES) if os.path.isdir(MATRICES) else [])
                   if os.path.exists(os.path.join(MATRICES, d, "plan.json")))
    by_name = [d for d in names if d.rsplit("-", 1)[0] == name]
    if by_name and name not in names:
        return os.path.join(MATRICES, max(by_name, key=lambda d: os.path.getmtime(
            os.path.join(MATRICES, d, "plan.json"))))
    bare = sorted({d.rsplit("-", 1)[0] for d in names}) + names
    return os.path.join(MATRICES, _pick("matrix", name, names, bare))


def run_rows(ids: list) -> list:
    plans = [fsio.read_json(os.path.join(RUNS, i, "config.json"), {}) or {} for i in ids]
    return report.collect([{"run_id": i, **p} for i, p in zip(ids, plans)])


# make runs: (column, row key); FILTER= takes the column names ("sparsity" is the target)
RUN_FIELDS = (("id", "run_id"), ("model", "model"), ("optimizer", "optimizer"),
              ("pruning", "pruning_method"), ("sparsity", "target_sparsity"),
              ("achieved", "sparsity"), ("seed", "seed"), ("status", "status"),
              ("stop", "stop"), ("metric", "primary_metric"), ("value", "primary_value"),
              ("date", "date"))
NUMERIC = ("sparsity", "achieved", "seed", "value")


def parse_filter(text: str) -> list:
    """FILTER="pruning=state sparsity=0.7" -> [(column, value)]; an unknown column or a
    term without '=' is an error naming the columns."""
    names = [c for c, _ in RUN_FIELDS]
    out = []
    for term in text.split():
        key, eq, value = term.partition("=")
        if not eq or key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {near[0]}? " if near and eq else ""
            raise ConfigError(f"FILTER term {term!r}: {hint}give column=value with a column of "
                              f"{', '.join(names)}")
        if key in NUMERIC:
            try:
                float(value)
            except ValueError:
                raise ConfigError(f"FILTER term {term!r}: {key} is a number") from None
        out.append((key, value))
    return out


def matches(row: dict, terms: list) -> bool:
    key_of = dict(RUN_FIELDS)
    for col, want in terms:
        got = row.get(key_of[col])
        if col in NUMERIC:
            if got is None or abs(float(got) - float(want)) > 1e-9:
                return False
        elif str(got) != want:
            return False
    return True


def cmd_runs(args) -> int:
    terms = parse_filter(args.filter)
    if args.matrix:
        doc = fsio.read_json(os.path.join(matrix_dir(args.matrix), "plan.json"))
        rows = report.collect(doc["runs"])
    else:
        rows = run_rows(sorted(os.listdir(RUNS)) if os.path.isdir(RUNS) else [])
    for r in rows:
        st = fsio.read_json(os.path.join(RUNS, r["run_id"], "status.json"), {}) or {}
        when = st.get("stopped") or st.get("updated")
        r["date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime(when)) if when else ""
    rows = [r for r in rows if matches(r, terms)]
    if args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow([c for c, _ in RUN_FIELDS])
        w.writerows([["" if r.get(k) is None else r.get(k) for _, k in RUN_FIELDS] for r in rows])
        return 0
    print(f"{'run':<58} {'status':<8} {'stop':<12} {'seed':>4} {'target':>6} {'sparsity':>8} "
          f"{'metric':>16} {'steps':>6}  date")
    for r in rows:
        metric = (f"{r['primary_metric']} {r['primary_value']:.2f}"
                  if r.get("primary_value") is not None else "-")
        sp = f"{r['sparsity']:.3f}" if r.get("sparsity") is not None else "-"
        print(f"{r['run_id']:<58} {r['status']:<8} {(r.get('stop') or '-')[:12]:<12} "
              f"{r.get('seed', 1):>4} {r['target_sparsity']:>6g} {sp:>8} {metric:>16} "
              f"{r.get('steps', '-'):>6}  {r['date'] or '-'}")
    if not rows and terms:
        print(f"no run matches FILTER={args.filter!r}")
    return 0


def config_diff(a: str, b: str) -> list:
    """[(field, value in a, value in b, semantic?)] of the fields that differ."""
    ca = fsio.read_json(os.path.join(RUNS, a, "config.json"), {}) or {}
    cb = fsio.read_json(os.path.join(RUNS, b, "config.json"), {}) or {}
    skip = ("out_dir", "models_dir")          # always differ: where each run lives
    return [(k, ca.get(k), cb.get(k), k not in NON_SEMANTIC) for k in sorted(set(ca) | set(cb))
            if ca.get(k) != cb.get(k) and k not in skip]


def read_dotconfig(path: str) -> dict:
    """{symbol: value} of a .config; '# CONFIG_X is not set' is X = n."""
    out = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line[len("CONFIG_"):].split("=", 1)
            out[k] = v
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[len("# CONFIG_"):-len(" is not set")]] = "n"
    return out


def dotconfig_diff(a: dict, b: dict) -> list:
    """Linux scripts/diffconfig's lines: -SYM old (only in A), +SYM new (only in B),
    ' SYM old -> new' (changed), sorted by symbol within each group."""
    gone = [f"-{k} {a[k]}" for k in sorted(set(a) - set(b))]
    new = [f"+{k} {b[k]}" for k in sorted(set(b) - set(a))]
    changed = [f" {k} {a[k]} -> {b[k]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return gone + new + changed


def is_matrix(name: str) -> bool:
    try:
        matrix_dir(name)
        return True
    except ConfigError:
        return False


def cmd_diffconfig(args) -> int:
    names = set(os.listdir(RUNS)) if os.path.isdir(RUNS) else set()
    is_run = lambda n: any(r.startswith(n) for r in names)  # noqa: E731
    if not (is_run(args.a) and is_run(args.b)) and is_matrix(args.a) and is_matrix(args.b):
        ma, mb = matrix_dir(args.a), matrix_dir(args.b)
        print(f"A {os.path.basename(ma)}\nB {os.path.basename(mb)}")
        lines = dotconfig_diff(*(read_dotconfig(os.path.join(m, "config")) for m in (ma, mb)))
        print("\n".join(lines) if lines else "same .config")
        return 0
    a, b = run_id(args.a), run_id(args.b)
    diff = config_diff(a, b)
    print(f"A {a}\nB {b}")
    if not diff:
        print("same resolved config (ids differ only in where things go)")
    for k, va, vb, semantic in diff:
        print(f"  {k:<24} {va!r:>20} -> {vb!r:<20}{'' if semantic else '  (not part of the id)'}")
    return 0


def _interval(c: dict) -> str:
    return f"[{c['ci95_low']:.2f}, {c['ci95_high']:.2f}]" if c["ci95_low"] == c["ci95_low"] else "-"


def compare_plot(pairs: list, name_a: str, name_b: str) -> str:
    """One figure: per cell, A's and B's train loss (mean over their seeds, smoothed; raw
    faint) and eval loss overlaid; written to results/compare/<A>_vs_<B>.png."""
    path = os.path.join(RESULTS, "compare", f"{name_a}_vs_{name_b}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return plots.overlay_curves(path, pairs, name_a, name_b)


def cmd_compare(args) -> int:
    names = set(os.listdir(RUNS)) if os.path.isdir(RUNS) else set()
    if any(n.startswith(args.a) for n in names) and any(n.startswith(args.b) for n in names):
        a, b = run_id(args.a), run_id(args.b)
        ra, rb = run_rows([a, b])
        for r in (ra, rb):
            print(f"{r['run_id']}: {r['status']}, {r.get('primary_metric', '')} "
                  f"{r.get('primary_value', float('nan')):.4f}, sparsity {r.get('sparsity', 0):.4f}, "
                  f"{r.get('steps', '-')} steps, {r.get('throughput') or 0:,.0f} {r.get('unit', '')}/s")
        if ra.get("primary_value") is not None and rb.get("primary_value") is not None:
            print(f"B - A: {rb['primary_value'] - ra['primary_value']:+.4f} (one run each: no "
                  f"interval; run seeds for one, docs/statistics.md)")
        for k, va, vb, semantic in config_diff(a, b):
            print(f"  config {k}: {va!r} -> {vb!r}{'' if semantic else ' (not in the id)'}")
        print(f"curves: {os.path.relpath(compare_plot([(f'{a} vs {b}', [a], [b])], a, b), REPO)}")
        return 0
    ma, mb = matrix_dir(args.a), matrix_dir(args.b)
    rows = {d: report.collect(fsio.read_json(os.path.join(d, "plan.json"))["runs"]) for d in (ma, mb)}
    ca, cb = ({stats.cell_key(c): c for c in stats.cells(rows[d])} for d in (ma, mb))
    runs_of, rate = {}, {}
    for d in (ma, mb):
        for r in rows[d]:
            if r["status"] == "done" and r.get("primary_value") is not None:
                runs_of.setdefault((d, stats.cell_key(r)), {})[r.get("seed", 1)] = r["primary_value"]
                rate.setdefault((d, stats.cell_key(r)), []).append(r.get("throughput") or 0.0)
    common = [k for k in ca if k in cb]
    print(f"A {os.path.basename(ma)}\nB {os.path.basename(mb)}\n{len(common)} common cells")
    print(f"{'cell':<32} {'A [95%]':>27} {'B [95%]':>27} {'B - A':>7} {'95% interval':>16} "
          f"{'p':>6} {'sparsity A/B':>13} {'throughput A/B':>15}  test")
    for k in common:
        cmp = stats.compare(runs_of[(mb, k)], runs_of[(ma, k)])
        lo, hi = cmp["diff_low"], cmp["diff_high"]
        interval = f"[{lo:+.2f}, {hi:+.2f}]" if lo == lo else "-"
        p = f"{cmp['p_value']:.3g}" if cmp["p_value"] == cmp["p_value"] else "-"
        cell = f"{k[0]} {k[1]} {k[2]} {k[3]:g}"
        side = lambda c: f"{c['mean']:.2f} {_interval(c)} n={c['n']}"  # noqa: E731
        thr = "/".join(f"{sum(rate[(d, k)]) / len(rate[(d, k)]):,.0f}" for d in (ma, mb))
        print(f"{cell:<32} {side(ca[k]):>27} {side(cb[k]):>27} {cmp['diff']:>+7.2f} "
              f"{interval:>16} {p:>6} {ca[k]['sparsity']:>6.4f}/{cb[k]['sparsity']:<6.4f} "
              f"{thr:>15}  {cmp['test']}")
    if common:
        pairs = [(f"{k[0]} {k[1]} {k[2]} {k[3]:g}", ca[k]["run_ids"], cb[k]["run_ids"])
                 for k in common]
        path = compare_plot(pairs, os.path.basename(ma), os.path.basename(mb))
        print(f"curves: {os.path.relpath(path, REPO)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["runs", "diffconfig", "compare"])
    ap.add_argument("--matrix", default="")
    ap.add_argument("--filter", default="", help='runs: "column=value ..." (FILTER=)')
    ap.add_argument("--format", default="table", choices=["table", "csv"], help="runs: FORMAT=csv")
    ap.add_argument("--a", default="")
    ap.add_argument("--b", default="")
    args = ap.parse_args(argv)
    if args.command != "runs" and not (args.a and args.b):
        print(f"error: `make {args.command}` needs A=<...> and B=<...>", file=sys.stderr)
        return 2
    try:
        return {"runs": cmd_runs, "diffconfig": cmd_diffconfig, "compare": cmd_compare}[args.command](args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run_main(main)
