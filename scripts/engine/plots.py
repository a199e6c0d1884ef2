"""A matrix's figures, from the files on disk alone (matplotlib, Agg), drawn to be printed:

- accuracy_vs_sparsity.png: the primary metric against achieved sparsity, per model, one
  line per optimizer x method: the mean over seeds with its 95 percent band (error bars at
  each level), the dense value as a reference line, the baseline dashed; a hollow marker is
  a cell within noise of the baseline. With one seed the title says that differences below
  the noise floor are not visible.
- layer_sparsity.png: per-layer achieved sparsity of each pruning method at the highest
  target (the first seed's run).
- training_curves.png: per model, train loss (smoothed, the raw curve faint) and eval loss,
  with the pruning schedule's sparsity on a second axis.
- throughput_memory.png: throughput per cell (mean over seeds, error bars) and, on GPUs,
  peak GPU memory; a CPU run's resident size is no GPU memory and gets no bar.

Colours and markers tell the pruning methods apart, line styles the optimizers; legends sit
outside the data.
"""
from __future__ import annotations

import math
import os

import numpy as np

from lib import fsio
from lib.paths import RUNS
from scripts.engine import stats

GRAPHS = ("accuracy_vs_sparsity.png", "layer_sparsity.png", "training_curves.png",
          "throughput_memory.png")
METHOD_STYLE = {"none": ("black", "s"), "magnitude": ("tab:blue", "o"),
                "movement": ("tab:orange", "^"), "state": ("tab:green", "D")}
OPT_STYLE = {"sgd": ":", "adam": "-.", "adamw": "-", "adamwadv": (0, (5, 1)),
             "adamwspam": (0, (3, 1, 1, 1)), "adamwprune": "--"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _style(opt: str, method: str) -> dict:
    colour, marker = METHOD_STYLE.get(method, ("tab:purple", "x"))
    return {"color": colour, "marker": marker, "ls": OPT_STYLE.get(opt, "-")}


def _save(fig, matrix_dir: str, name: str) -> str:
    path = os.path.join(matrix_dir, name)
    tmp = os.path.join(matrix_dir, "." + name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def seed_note(cells: list) -> str:
    """The summary's and the plots' first line about how far the numbers can be trusted."""
    n = max((c["n"] for c in cells), default=0)
    if n <= 1:
        return "1 seed: differences below the noise floor are not visible (CONFIG_MATRIX_SEEDS)"
    floor = stats.noise_floor(cells)
    return (f"{n} seeds per cell: mean and 95% interval; noise floor (pooled std of the dense "
            f"cells) {floor:.3g}" if not math.isnan(floor) else f"{n} seeds per cell")


def accuracy_vs_sparsity(plt, matrix_dir, cells, baseline_cell):
    models = sorted({c["model"] for c in cells}) or ["(no finished runs)"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [c for c in cells if c["model"] == model]
        for opt in sorted({c["optimizer"] for c in mine}):
            dense = next((c for c in mine if c["optimizer"] == opt and c["pruning_method"] == "none"), None)
            if dense:
                ax.axhline(dense["mean"], color="black", lw=0.8, alpha=0.5,
                           ls=OPT_STYLE.get(opt, "-"), label=f"{opt} dense")
            for method in sorted({c["pruning_method"] for c in mine if c["optimizer"] == opt} - {"none"}):
                pts = sorted((c for c in mine if (c["optimizer"], c["pruning_method"]) == (opt, method)),
                             key=lambda c: c["sparsity"])
                x = [100 * c["sparsity"] for c in pts]
                y = np.array([c["mean"] for c in pts])
                lo = np.array([c["ci95_low"] for c in pts])
                hi = np.array([c["ci95_high"] for c in pts])
                st = _style(opt, method)
                ax.plot(x, y, label=f"{opt} + {method}", **st)
                if not np.isnan(lo).all():
                    ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15)
                    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor=st["color"],
                                alpha=0.6, capsize=3)
                noisy = [(xi, c["mean"]) for xi, c in zip(x, pts) if c.get("within_noise")]
                if noisy:
                    ax.scatter(*zip(*noisy), s=90, facecolors="white", edgecolors=st["color"],
                               zorder=3, label=f"{opt} + {method}: within noise")
        if baseline_cell and baseline_cell["model"] == model:
            ax.axhline(baseline_cell["mean"], color="gray", ls="--", lw=1.2,
                       label=f"baseline {baseline_cell['optimizer']} {baseline_cell['pruning_method']}")
        metric = mine[0]["primary_metric"] if mine else "metric"
        ax.set(title=model, xlabel="achieved sparsity (%)", ylabel=f"eval {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(seed_note(cells), fontsize=9)
    fig.tight_layout()
    path = _save(fig, matrix_dir, GRAPHS[0])
    plt.close(fig)
    return path


def layer_sparsity(plt, matrix_dir, rows):
    done = [r for r in rows if r["status"] == "done" and r.get("layer_sparsity")
            and r["pruning_method"] != "none"]
    picks = {}
    for r in done:       # per (model, optimizer, method): the highest target, first seed
        key = (r["model"], r["optimizer"], r["pruning_method"])
        if key not in picks or r["target_sparsity"] > picks[key]["target_sparsity"]:
            picks[key] = r
    fig, ax = plt.subplots(figsize=(10, 4.5))
    layers = list(dict.fromkeys(name for r in picks.values() for name in r["layer_sparsity"]))
    width = 0.8 / max(1, len(picks))
    for i, ((model, opt, method), r) in enumerate(sorted(picks.items())):
        st = _style(opt, method)
        vals = [100 * float(r["layer_sparsity"].get(name, math.nan)) for name in layers]
        ax.bar(np.arange(len(layers)) + i * width, vals, width, color=st["color"],
               hatch="//" if st["ls"] != "-" else None, alpha=0.8,
               label=f"{model} {opt} + {method} @ {r['target_sparsity']:g}")
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="achieved sparsity (%)", title="Per-layer sparsity at the highest target")
    ax.grid(alpha=0.3, axis="y")
    if picks:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = _save(fig, matrix_dir, GRAPHS[1])
    plt.close(fig)
    return path


def smooth(y, window: int):
    """Centred moving average over `window` points (edges average what is there)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) < 3:
        return y
    k = np.ones(window)
    return np.convolve(y, k, "same") / np.convolve(np.ones_like(y), k, "same")


def training_curves(plt, matrix_dir, rows):
    models = sorted({r["model"] for r in rows}) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        twin = ax.twinx()
        for r in [r for r in rows if r["model"] == model and r.get("seed", 1) == min(
                  x.get("seed", 1) for x in rows if x["model"] == model)]:
            metrics = fsio.read_jsonl(os.path.join(RUNS, r["run_id"], "metrics.jsonl"))
            train = [(m["step"], m["loss"], m.get("sparsity_target")) for m in metrics
                     if m.get("kind") == "train" and "loss" in m]
            evals = [(m["step"], m["loss"]) for m in metrics if m.get("kind") == "eval" and "loss" in m]
            if not train:
                continue
            st = _style(r["optimizer"], r["pruning_method"])
            steps, loss, sp = zip(*train)
            label = f"{r['optimizer']} + {r['pruning_method']} {r['target_sparsity']:g}"
            ax.plot(steps, loss, color=st["color"], ls=st["ls"], lw=0.6, alpha=0.25)
            ax.plot(steps, smooth(loss, max(1, len(loss) // 20)), color=st["color"], ls=st["ls"],
                    lw=1.4, label=f"{label} train")
            if evals:
                ax.plot(*zip(*evals), color=st["color"], marker=st["marker"], ls="none", ms=5,
                        label=f"{label} eval")
            if r["pruning_method"] != "none" and any(s is not None for s in sp):
                twin.plot(steps, [100 * (s or 0.0) for s in sp], color=st["color"], lw=0.8,
                          ls=(0, (1, 2)), alpha=0.7)
        ax.set(title=f"{model}: loss (smoothed; raw faint), eval markers", xlabel="step",
               ylabel="loss", yscale="log")
        twin.set_ylabel("scheduled sparsity (%, dotted)")
        twin.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.12, 1.0))
    fig.tight_layout()
    path = _save(fig, matrix_dir, GRAPHS[2])
    plt.close(fig)
    return path


def _mean_curves(run_ids: list) -> tuple:
    """(train steps, train loss, eval steps, eval loss), each the mean over the runs at the
    steps they all logged (the seeds of one cell log the same steps)."""
    train, evals = {}, {}
    for rid in run_ids:
        for m in fsio.read_jsonl(os.path.join(RUNS, rid, "metrics.jsonl")):
            if "loss" in m and m.get("kind") in ("train", "eval"):
                (train if m["kind"] == "train" else evals).setdefault(m["step"], []).append(m["loss"])
    pick = lambda d: sorted(s for s, v in d.items() if len(v) == len(run_ids))  # noqa: E731
    ts, es = pick(train), pick(evals)
    return (ts, [float(np.mean(train[s])) for s in ts], es, [float(np.mean(evals[s])) for s in es])


def overlay_curves(path: str, pairs: list, name_a: str, name_b: str) -> str:
    """make compare's figure: a panel per (title, A's run ids, B's run ids), A and B's train
    loss (smoothed, raw faint) and eval loss (markers) on one log axis."""
    plt = _plt()
    cols = min(3, len(pairs))
    rows_n = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.5 * cols, 4 * rows_n), squeeze=False)
    for ax, (title, ids_a, ids_b) in zip(axes.flat, pairs):
        for ids, name, colour in ((ids_a, name_a, "tab:blue"), (ids_b, name_b, "tab:orange")):
            ts, tl, es, el = _mean_curves(ids)
            if ts:
                ax.plot(ts, tl, color=colour, lw=0.6, alpha=0.25)
                ax.plot(ts, smooth(tl, max(1, len(tl) // 20)), color=colour, lw=1.4,
                        label=f"{name} train (n={len(ids)})")
            if es:
                ax.plot(es, el, color=colour, marker="o", ls="--", ms=4, label=f"{name} eval")
        ax.set(title=title, xlabel="step", ylabel="loss", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    fig.suptitle(f"A {name_a} (blue) vs B {name_b} (orange): loss, mean over seeds", fontsize=9)
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    plt.close(fig)
    return path


def throughput_memory(plt, matrix_dir, rows, cells):
    done = [r for r in rows if r["status"] == "done"]
    gpu = any(r.get("device") == "cuda" for r in done)
    fig, axes = plt.subplots(1, 2 if gpu else 1, figsize=(12 if gpu else 7,
                             max(3, 0.4 * len(cells) + 1.5)), squeeze=False)
    labels = [f"{c['model']} {c['optimizer']} + {c['pruning_method']} {c['target_sparsity']:g}"
              for c in cells]
    by_cell = {stats.cell_key(r): [] for r in done}
    for r in done:
        by_cell[stats.cell_key(r)].append(r)
    rate = [stats.describe([r.get("throughput") or 0.0 for r in by_cell.get(stats.cell_key(c), [])])
            for c in cells]
    colours = [_style(c["optimizer"], c["pruning_method"])["color"] for c in cells]
    err = [0 if math.isnan(d["ci95_high"]) else d["ci95_high"] - d["mean"] for d in rate]
    ax = axes[0][0]
    ax.barh(labels, [d["mean"] for d in rate], xerr=err, color=colours)
    unit = done[0].get("unit", "samples") if done else "samples"
    ax.set(xlabel=f"{unit}/s", title="Throughput (median step rate; mean over seeds)")
    if gpu:
        mem = [np.mean([r.get("peak_memory_mb") or 0.0 for r in by_cell.get(stats.cell_key(c), [])])
               for c in cells]
        axes[0][1].barh(labels, mem, color=colours)
        axes[0][1].set(xlabel="peak GPU memory (MB)", title="Peak GPU memory")
        axes[0][1].set_yticks([])
    fig.tight_layout()
    path = _save(fig, matrix_dir, GRAPHS[3])
    plt.close(fig)
    return path


def draw(matrix_dir: str, rows: list[dict], baseline: str | None = None) -> list[str]:
    """All figures of a matrix; rows as report.collect gives them (with seed and device)."""
    plt = _plt()
    cells = stats.cells(rows, baseline=baseline)
    base_cell = None
    if baseline:
        hit = next((r for r in rows if r["run_id"].startswith(baseline)), None)
        base_cell = next((c for c in cells if hit and stats.cell_key(c) == stats.cell_key(hit)), None)
    return [accuracy_vs_sparsity(plt, matrix_dir, cells, base_cell),
            layer_sparsity(plt, matrix_dir, rows),
            training_curves(plt, matrix_dir, rows),
            throughput_memory(plt, matrix_dir, rows, cells)]
