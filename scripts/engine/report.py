"""A matrix's results from the files on disk alone: the summary tables (console, Markdown,
CSV), the graphs (scripts/engine/plots.py) and the archive copy under results/archive/.

Two tables: one row per cell (model x optimizer x pruning x sparsity) with the mean and 95
percent interval of its metric over the seeds and, under BASELINE, the difference to the
baseline's cell with its interval, p-value and "within noise" mark (scripts/engine/stats.py;
cells.csv), headed by the seed note and the noise floor; and one row per run (summary.csv).

Each row says why its run stopped (`stop`: finished, time budget, failed: <reason>), and
runs of one model whose step counts differ by more than STEPS_TOLERANCE from that model's
most are flagged (`steps_flag`, and a line under the table): under a TIME budget such cells
trained for less and are not compared like for like."""
from __future__ import annotations

import csv
import filecmp
import io
import os
import shutil
import time

from lib import fsio
from lib.paths import ARCHIVE, RUNS
from scripts.engine import plots, stats
from scripts.engine.plots import GRAPHS
STEPS_TOLERANCE = 0.05
STOP_WIDTH = 40          # the table's stop cell; summary.csv's reason column has it whole

COLUMNS = [  # (header, key, format)
    ("run", "run_id", "{}"), ("status", "status", "{}"), ("stop", "stop", "{}"),
    ("optimizer", "optimizer", "{}"),
    ("pruning", "pruning_method", "{}"), ("target", "target_sparsity", "{:.2f}"),
    ("sparsity", "sparsity", "{:.4f}"), ("metric", "primary_metric", "{}"),
    ("value", "primary_value", "{:.2f}"), ("delta", "delta", "{:+.2f}"),
    ("eval_loss", "eval_loss", "{:.4f}"), ("steps", "steps", "{}"),
    ("wall_s", "wall_time_s", "{:.1f}"), ("peak_mb", "peak_memory_mb", "{:.0f}"),
    ("throughput", "throughput", "{:,.0f}"), ("unit", "unit", "{}/s"),
]


def run_dir(run_id: str) -> str:
    return os.path.join(RUNS, run_id)


def collect(plan_runs: list, baseline: str | None = None) -> list[dict]:
    """One row per planned run: its config, status and summary (if finished)."""
    base = find_baseline(baseline) if baseline else None
    rows = []
    for cfg in plan_runs:
        rid = cfg["run_id"]
        status = fsio.read_json(os.path.join(run_dir(rid), "status.json"), {}) or {}
        summ = fsio.read_json(os.path.join(run_dir(rid), "summary.json"), {}) or {}
        row = {"run_id": rid, "model": cfg["model"], "optimizer": cfg["optimizer"],
               "pruning_method": cfg["pruning_method"], "target_sparsity": cfg["target_sparsity"],
               "seed": cfg.get("seed", 1), "device": cfg.get("device", "cpu"),
               "status": status.get("status", "not started"), "reason": status.get("reason", "")}
        row.update({k: v for k, v in summ.items() if k not in row or k == "run_id"})
        metric = summ.get("primary_metric")
        if metric:
            row["primary_value"] = summ.get(f"eval_{metric}")
            if base and base.get("primary_metric") == metric and row["primary_value"] is not None:
                row["delta"] = row["primary_value"] - base[f"eval_{metric}"]
        row["stop"] = stop_of(row)
        rows.append(row)
    flag_steps(rows)
    return rows


def stop_of(row: dict) -> str:
    """finished, time budget, failed: <reason>; "" while a run has not ended."""
    if row["status"] == "failed":
        return f"failed: {row.get('reason') or 'unknown'}"
    if row["status"] != "done":
        return ""
    reason = row.get("stop_reason") or "finished"
    return "time budget" if reason.startswith("time budget") else reason


def flag_steps(rows: list[dict]) -> list[dict]:
    """Set steps_flag on the finished runs whose steps fall more than STEPS_TOLERANCE short
    of the most any finished run of the same model took; return those rows."""
    flagged = []
    for model in sorted({r["model"] for r in rows}):
        done = [r for r in rows if r["model"] == model and r["status"] == "done"
                and isinstance(r.get("steps"), int)]
        most = max((r["steps"] for r in done), default=0)
        for r in done:
            if most and (most - r["steps"]) / most > STEPS_TOLERANCE:
                r["steps_flag"] = f"{r['steps'] / most - 1:+.0%} vs {most}"
                flagged.append(r)
    return flagged


def notes(rows: list[dict]) -> list[str]:
    """The lines under the table."""
    out = []
    flagged = [r for r in rows if r.get("steps_flag")]
    if flagged:
        out.append(f"Step counts differ by more than {STEPS_TOLERANCE:.0%} within a model "
                   f"(not like for like): " + ", ".join(f"{r['run_id']} ({r['steps']} steps, "
                                                      f"{r['steps_flag']})" for r in flagged))
    return out


def find_baseline(run_id: str) -> dict:
    runs = RUNS
    names = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    hits = [n for n in names if n == run_id] or [n for n in names if n.startswith(run_id)]
    summ = fsio.read_json(os.path.join(runs, hits[0], "summary.json")) if len(hits) == 1 else None
    if not summ:
        raise ValueError(f"BASELINE={run_id}: no single finished run with that id under "
                         f"results/runs; pick a run id from a summary table")
    return summ


def _fmt(row, key, fmt):
    v = row.get(key)
    if v is None or v == "":
        return "-"
    if key == "stop" and len(v) > STOP_WIDTH:
        return v[:STOP_WIDTH - 3] + "..."
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def table(rows: list[dict]) -> tuple[list, list]:
    cols = [c for c in COLUMNS if c[1] != "delta" or any("delta" in r for r in rows)]
    return [c[0] for c in cols], [[_fmt(r, k, f) for _, k, f in cols] for r in rows]


def render_text(rows) -> str:
    head, body = table(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
                     + notes(rows))


def render_markdown(rows, title: str) -> str:
    head, body = table(rows)
    out = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(b) + " |" for b in body]
    out += [""] + notes(rows) if notes(rows) else []
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        out += ["", "Failed runs:"] + [f"- {r['run_id']}: {r['reason']}" for r in failed]
    return "\n".join(out) + "\n"


# with several seeds, each run's row of summary.csv also carries its cell's statistics
CELL_IN_RUN_ROWS = ("n", "mean", "std", "ci95_low", "ci95_high", "diff", "diff_low",
                    "diff_high", "p_value", "verdict")


def render_csv(rows, cells: list[dict] | None = None) -> str:
    """One row per run. With several seeds (a cell of n > 1), the row gains its cell's n,
    mean, std, interval and, against a baseline, difference, interval, p and verdict, as
    cell_<name> columns; a single-seed matrix's file is as it always was."""
    keys = [c[1] for c in COLUMNS] + ["steps_flag", "model", "train_loss", "params",
                                      "stop_reason", "reason", "warmup_s", "train_s",
                                      "evaluation_s"]
    of_run = {}
    if cells and any(c.get("n", 1) > 1 for c in cells):
        keys += [f"cell_{k}" for k in CELL_IN_RUN_ROWS]
        of_run = {rid: {f"cell_{k}": c.get(k) for k in CELL_IN_RUN_ROWS}
                  for c in cells for rid in c["run_ids"]}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, **of_run.get(r.get("run_id"), {})})
    return buf.getvalue()


CELL_COLUMNS = [  # (header, key, format)
    ("model", "model", "{}"), ("optimizer", "optimizer", "{}"), ("pruning", "pruning_method", "{}"),
    ("target", "target_sparsity", "{:.2f}"), ("sparsity", "sparsity", "{:.4f}"),
    ("metric", "primary_metric", "{}"), ("n", "n", "{}"), ("mean", "mean", "{:.2f}"),
    ("std", "std", "{:.2f}"), ("ci95_low", "ci95_low", "{:.2f}"), ("ci95_high", "ci95_high", "{:.2f}"),
    ("diff", "diff", "{:+.2f}"), ("diff_low", "diff_low", "{:+.2f}"),
    ("diff_high", "diff_high", "{:+.2f}"), ("p", "p_value", "{:.3g}"), ("vs baseline", "verdict", "{}"),
]


def cell_rows(rows: list[dict], baseline: str | None = None) -> list[dict]:
    cells = stats.cells(rows, baseline=baseline)
    for c in cells:
        if "within_noise" in c:
            c["verdict"] = {True: "within noise", False: "differs", None: "untested"}[c["within_noise"]]
        for k in ("std", "ci95_low", "ci95_high", "diff_low", "diff_high", "p_value"):
            if isinstance(c.get(k), float) and c[k] != c[k]:
                c[k] = None          # NaN: not computable with these seeds; shown as "-"
    return cells


def cell_table(cells: list[dict]) -> tuple[list, list]:
    cols = [c for c in CELL_COLUMNS if c[1] not in ("diff", "diff_low", "diff_high", "p_value",
                                                    "verdict") or any("diff" in x for x in cells)]
    return [c[0] for c in cols], [[_fmt(x, k, f) for _, k, f in cols] for x in cells]


def head_lines(cells: list[dict], baseline: str | None) -> list[str]:
    out = [plots.seed_note(cells)]
    tested = [c for c in cells if c.get("test") not in (None, "none")]
    if baseline and tested:
        out.append(f"against BASELINE={baseline}: {tested[0]['test'].split(' (')[0]} "
                   f"(docs/statistics.md); 'within noise': the 95% interval of the difference holds 0")
    return out


def _text_table(head, body) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]


def render_cells_csv(cells: list[dict]) -> str:
    keys = [c[1] for c in CELL_COLUMNS] + ["test", "seeds", "run_ids"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for c in cells:
        w.writerow({**c, "seeds": " ".join(map(str, c["seeds"])), "run_ids": " ".join(c["run_ids"])})
    return buf.getvalue()


def write_summary(matrix_dir: str, rows: list[dict], title: str,
                  baseline: str | None = None) -> str:
    """summary.md (cells, then runs), summary.csv (runs, with their cell's statistics when
    there are several seeds), cells.csv; returns the printed
    text: the seed note, the cell table, then the run table."""
    cells = cell_rows(rows, baseline)
    head, body = cell_table(cells)
    lines = head_lines(cells, baseline)
    md = [f"# {title}", ""] + lines + ["", "## Cells", "", "| " + " | ".join(head) + " |",
                                       "|" + "---|" * len(head)]
    md += ["| " + " | ".join(b) + " |" for b in body]
    runs_md = render_markdown(rows, "Runs").replace("# Runs", "## Runs", 1)
    fsio.atomic_write_text(os.path.join(matrix_dir, "summary.md"), "\n".join(md) + "\n\n" + runs_md)
    fsio.atomic_write_text(os.path.join(matrix_dir, "summary.csv"), render_csv(rows, cells))
    fsio.atomic_write_text(os.path.join(matrix_dir, "cells.csv"), render_cells_csv(cells))
    return "\n".join(lines + [""] + _text_table(head, body) + ["", "runs:"] + [render_text(rows)])


# -----------------------------------------------------------------------------
# graphs (scripts/engine/plots.py)

def graphs(matrix_dir: str, rows: list[dict], baseline: str | None = None) -> list[str]:
    return plots.draw(matrix_dir, rows, baseline)


# -----------------------------------------------------------------------------
# archive

def archive(matrix_dir: str) -> str:
    """Copy the key results to results/archive/<date>-<folder>/ (tracked in git), the
    folder being the matrix's own, <name>-<hash of its config>. An entry is never overwritten: the same
    files again are a no-op; other files (more runs finished, FORCE=1 re-runs) go to a new
    entry <...>-2, -3, ... beside it."""
    files = [f for f in ("summary.md", "summary.csv", "cells.csv", "config", "plan.json", *GRAPHS)
             if os.path.exists(os.path.join(matrix_dir, f))]
    folder = os.path.basename(os.path.normpath(matrix_dir))
    base = os.path.join(ARCHIVE, f"{time.strftime('%Y-%m-%d')}-{folder}")
    dest, n = base, 1
    while os.path.exists(dest):
        if _same_files(matrix_dir, dest, files):
            return dest
        n += 1
        dest = f"{base}-{n}"
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for f in files:
        shutil.copyfile(os.path.join(matrix_dir, f), os.path.join(tmp, f))
    os.rename(tmp, dest)            # complete or absent: the entry appears whole
    return dest


def _same_files(src: str, dest: str, files: list) -> bool:
    if sorted(files) != sorted(f for f in os.listdir(dest) if not f.startswith(".")):
        return False
    return all(filecmp.cmp(os.path.join(src, f), os.path.join(dest, f), shallow=False)
               for f in files)
