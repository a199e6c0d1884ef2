"""A matrix's results from the files on disk alone: the summary table (console, Markdown,
CSV), the graphs (matplotlib, Agg) and the archive copy under results/archive/.

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
GRAPHS = ("accuracy_vs_sparsity.png", "training_curves.png", "memory_throughput.png")
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


def render_csv(rows) -> str:
    keys = [c[1] for c in COLUMNS] + ["steps_flag", "model", "train_loss", "params",
                                      "stop_reason", "reason", "warmup_s", "train_s",
                                      "evaluation_s"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def write_summary(matrix_dir: str, rows: list[dict], title: str) -> str:
    fsio.atomic_write_text(os.path.join(matrix_dir, "summary.md"), render_markdown(rows, title))
    fsio.atomic_write_text(os.path.join(matrix_dir, "summary.csv"), render_csv(rows))
    return render_text(rows)


# -----------------------------------------------------------------------------
# graphs

def graphs(matrix_dir: str, rows: list[dict], baseline: str | None = None) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done" and r.get("primary_value") is not None]
    paths = []

    # accuracy (or the model's headline metric) vs achieved sparsity
    models = sorted({r["model"] for r in done})
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(6 * max(1, len(models)), 4.5),
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in done if r["model"] == model]
        dense = {r["optimizer"]: r for r in mine if r["pruning_method"] == "none"}
        for key in sorted({(r["optimizer"], r["pruning_method"]) for r in mine
                           if r["pruning_method"] != "none"}):
            pts = sorted((r["sparsity"], r["primary_value"]) for r in mine
                         if (r["optimizer"], r["pruning_method"]) == key)
            if key[0] in dense:
                pts = [(0.0, dense[key[0]]["primary_value"])] + pts
            ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{key[0]} + {key[1]}")
        for opt, r in dense.items():
            if not any(k[0] == opt for k in {(x["optimizer"], x["pruning_method"]) for x in mine
                                              if x["pruning_method"] != "none"}):
                ax.plot([0], [r["primary_value"]], "s", label=f"{opt} dense")
        if baseline:
            b = next((r for r in rows if r["run_id"].startswith(baseline)), None)
            if b and b.get("primary_value") is not None:
                ax.axhline(b["primary_value"], color="gray", ls="--", label=f"baseline {baseline[:24]}")
        metric = mine[0]["primary_metric"] if mine else "metric"
        ax.set(title=model, xlabel="achieved sparsity (%)", ylabel=f"test {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, matrix_dir, GRAPHS[0]))
    plt.close(fig)

    # training curves
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        pts = [(m["step"], m["loss"]) for m in fsio.read_jsonl(os.path.join(run_dir(r["run_id"]),
                                                                             "metrics.jsonl"))
               if m.get("kind") == "train"]
        if pts:
            ax.plot(*zip(*pts), lw=1, label=r["run_id"].rsplit("-", 1)[0])
    ax.set(xlabel="step", ylabel="training loss", title="Training curves", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(_save(fig, matrix_dir, GRAPHS[1]))
    plt.close(fig)

    # peak memory and throughput
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, max(3, 0.35 * len(done) + 1.5)))
    labels = [r["run_id"].rsplit("-", 1)[0] for r in done]
    a1.barh(labels, [r.get("peak_memory_mb", 0) for r in done], color="tab:blue")
    a1.set(xlabel="peak memory (MB)", title="Peak memory")
    a2.barh(labels, [r.get("throughput", 0) for r in done], color="tab:green")
    unit = done[0].get("unit", "samples") if done else "samples"
    a2.set(xlabel=f"{unit}/s", title="Throughput")
    a2.set_yticks([])
    fig.tight_layout()
    paths.append(_save(fig, matrix_dir, GRAPHS[2]))
    plt.close(fig)
    return paths


def _save(fig, matrix_dir, name) -> str:
    path = os.path.join(matrix_dir, name)
    tmp = os.path.join(matrix_dir, "." + name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


# -----------------------------------------------------------------------------
# archive

def archive(matrix_dir: str) -> str:
    """Copy the key results to results/archive/<date>-<folder>/ (tracked in git), the
    folder being the matrix's own, <name>-<hash of its config>. An entry is never overwritten: the same
    files again are a no-op; other files (more runs finished, FORCE=1 re-runs) go to a new
    entry <...>-2, -3, ... beside it."""
    files = [f for f in ("summary.md", "summary.csv", "config", "plan.json", *GRAPHS)
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
