"""The reports of scripts/bench/kernel_ops.py: the target verdicts (summary), the Markdown
report with each chosen plan's kernel time from the run's autotune cache, the JSON report,
the rows appended to results/benchmarks.csv, and the regressions against an earlier report."""
from __future__ import annotations

import json
from pathlib import Path

from kernels import autotune
from scripts.bench import table
from scripts.bench.kernel_harness import Bench

TARGET = {"matmul": 0.9, "attention": 0.9, "block_sparse": 4.0}


def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _verdict(label: str, rows: list, target: float, detail, best: bool = False) -> str:
    """One target line: the worst (or, with best, the best) ratio of rows, which row it is
    (detail(row)), and whether it reaches target."""
    r = (max if best else min)(rows, key=lambda r: r["ratio"] or 0)
    return (f"- {label}: {'best' if best else 'worst'} {fmt(r['ratio'])}x {detail(r)}, "
            f"target >= {target}x: {'met' if (r['ratio'] or 0) >= target else 'MISSED'}")


def summary(rows) -> list[str]:
    lines = []
    timings = (("", "timed calls"), (" graph", "CUDA-graph replay"))
    for suffix, how in timings:
        gpt2 = [r for r in rows if r["op"] == "matmul" and r["case"].startswith("gpt2")
                and r["pass"] == "fwd" + suffix and "+" not in r["case"]]
        if gpt2:
            lines.append(_verdict(f"matmul vs torch, GPT-2 shapes fwd, {how}", gpt2,
                                  TARGET["matmul"], lambda r: f"({r['case']} {r['layout']})"))
    for suffix, how in timings:
        resnet = [r for r in rows if r["op"] == "matmul" and r["case"].startswith("resnet")
                  and r["pass"] == "fwd" + suffix]
        if resnet:
            lines.append(_verdict(f"matmul vs torch, ResNet GEMMs fwd, {how}", resnet,
                                  TARGET["matmul"], lambda r: f"({r['case']})"))
    for suffix, how in timings:
        for d in (64, 128):
            att = [r for r in rows if r["op"] == "attention" and r["pass"] == "fwd+bwd" + suffix
                   and f"d{d} " in r["case"] and "flash" in r.get("layout", "")]
            if att:
                lines.append(_verdict(f"attention fwd+bwd vs {att[0]['layout']}, causal d{d}, "
                                      f"{how}", att, TARGET["attention"],
                                      lambda r: f"({r['case']})"))
    bs = [r for r in rows if r["op"] == "block_sparse" and r["case"].startswith("90%")]
    if bs:
        lines.append(_verdict("block-sparse at 90%", bs, TARGET["block_sparse"],
                              lambda r: f"dense at {'x'.join(map(str, r['shape']))} "
                                        f"({r['case']})", best=True))
    return lines


def kernel_only(rows, entries: dict) -> list[tuple]:
    """Per row, the tuner's own do_bench median of the chosen plan(s), from the autotune cache
    of the same run: the kernel's time without the per-call host cost. Attention fwd+bwd sums
    fwd + dK/dV + dQ (the small Delta kernel is not timed); block-sparse keys hold no
    density, so only the first density tuned for a shape (90%) is reported."""
    out, seen = [], set()
    for r in rows:
        op, shp, ps, lay = r["op"], r["shape"], r["pass"], r.get("layout") or ""
        kt = None
        if op == "matmul" and ps == "fwd" and "+" not in r["case"]:
            m, k, n = shp
            for layout in (("rc", "rr") if lay == "linear" else ("rr",)):
                e = entries.get(f"matmul|dtype={r['dtype']}|layout={layout}|"
                                f"M={autotune.bucket(m)}|N={n}|K={k}")
                if e:
                    out.append((r, f"{lay} ({layout})", e["ms"]))
            continue
        if op == "attention" and "flash" in lay and ps in ("fwd", "fwd+bwd"):
            bsz, h, t, d = shp
            key = (f"dtype={r['dtype']}|D={d}|causal=1|T={autotune.bucket(t)}|"
                   f"BH={autotune.bucket(bsz * h)}")
            parts = ["fwd"] + (["dkdv", "dq"] if ps == "fwd+bwd" else [])
            es = [entries.get(f"attention.{p}|{key}") for p in parts]
            kt = sum(e["ms"] for e in es) if all(es) else None
        elif op == "block_sparse":
            m, k, n = shp
            tile = 128 if "128x128" in r["case"] else 64
            key = f"block_sparse|dtype={r['dtype']}|tile={tile}|M={autotune.bucket(m)}|N={n}|K={k}"
            if key in seen:
                continue
            seen.add(key)
            e = entries.get(key)
            kt = e and e["ms"]
        if kt:
            out.append((r, lay, kt))
    return out


def markdown(b: Bench) -> str:
    m = b.meta
    out = [f"# kernels benchmark: {m['gpu']}", "",
           f"{m['date']}, torch {m['torch']}, triton {m['triton']}, host {m['host']} "
           f"(1-minute load average {m.get('loadavg_1m')} at the start, "
           f"{m.get('threads', 'default')} torch threads). "
           "ratio = torch ms / ours ms (> 1: ours faster), torch measured in the same run; "
           "err = ||out - ref|| / ||ref|| against float64 (attention: batch 0, heads 0-1; "
           "fwd+bwd: worst of output and gradients).", ""]
    out += ["## Targets", ""] + (summary(b.rows) or ["- (no rows)"]) + [""]
    sections = [("matmul", "matmul / linear"), ("attention", "attention"),
                ("block_sparse", "block-sparse linear"), ("semi_2_4", "2:4 semi-structured"),
                ("overhead", "host time per call at tiny shapes (ms columns)")]
    for op, title in sections:
        rows = [r for r in b.rows if r["op"] == op]
        if not rows:
            continue
        out += [f"## {title}", "",
                "| case | shape | dtype | pass | vs | ours ms | torch ms | ratio | ours TFLOP/s "
                "| torch TFLOP/s | err | torch err |",
                "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | "
                       f"{r['pass']} | {r.get('layout', '')} | {fmt(r['ms'])} | "
                       f"{fmt(r.get('torch_ms'))} | {fmt(r.get('ratio'))} | "
                       f"{fmt(r.get('tflops'))} | {fmt(r.get('torch_tflops'))} | "
                       f"{fmt(r.get('err'), 2)} | {fmt(r.get('torch_err'), 2)} |")
        out.append("")
    if b.autotune_entries:
        ko = kernel_only(b.rows, b.autotune_entries)
        if ko:
            out += ["## Kernel time alone (the tuner's median for the chosen plan, same run)", "",
                    "The tuner times a plan as 10 calls replayed from a CUDA graph (warm L2, "
                    "no host cost; kernels.autotune.graph_median_ms); a timed call above adds "
                    "the host's per-call cost where it exceeds the kernel's. No torch column: "
                    "torch's time was taken call by call, so compare with the graph rows, "
                    "which time both sides alike. Caches tuned before 2026-11-23's graph "
                    "timing hold call-by-call medians.", "",
                    "| op | case | shape | pass | vs | kernel ms | timed call ms |",
                    "|---|---|---|---|---|---:|---:|"]
            for r, lay, kt in ko:
                out.append(f"| {r['op']} | {r['case']} | {'x'.join(map(str, r['shape']))} | "
                           f"{r['pass']} | {lay} | {fmt(kt)} | {fmt(r['ms'])} |")
            out.append("")
    mem = [r for r in b.rows if r["op"] == "attention_memory"]
    if mem:
        out += ["## CPU attention peak memory (fwd+bwd, B=H=1, D=64, fp32, MiB above the "
                "inputs)", "", "| T | blocked (cpu backend) | torch SDPA | written-out "
                "reference |", "|---:|---:|---:|---:|"]
        for r in mem:
            out.append(f"| {r['shape'][2]} | {fmt(r['cpu_mib'])} | {fmt(r['torch_mib'])} | "
                       f"{fmt(r['reference_mib'])} |")
        out.append("")
    if b.skipped:
        out += ["## Skipped", ""] + [f"- {s}" for s in b.skipped] + [""]
    return "\n".join(out)


def compare(rows, baseline_path: str, threshold: float = 0.05) -> list[str]:
    """Rows slower than the baseline report's same case by more than threshold."""
    with open(baseline_path) as f:
        old = json.load(f)
    old_rows = old["rows"] if isinstance(old, dict) else old
    key = lambda r: (r["op"], r["case"], r.get("layout"), tuple(r["shape"]), r["dtype"],
                     r["pass"])
    before = {key(r): r for r in old_rows if r.get("ms")}
    lines = []
    for r in rows:
        o = before.get(key(r))
        if not o or not r.get("ms"):
            continue
        change = r["ms"] / o["ms"] - 1
        if change > threshold:
            lines.append(f"REGRESSION {r['op']} {r['case']} {r['pass']} {r['shape']}: "
                         f"{o['ms']} -> {r['ms']} ms (+{change * 100:.0f}%), ratio "
                         f"{o.get('ratio')} -> {r.get('ratio')}")
    return lines


def load_autotune(b: Bench, path=None):
    """The tuning cache's entries into b.autotune_entries: from path, or on CUDA from the
    device's own cache file; nothing where there is none."""
    if path is None and b.cuda:
        path = autotune.cache_file(b.meta["gpu"])
    if path and Path(path).exists():
        b.autotune_entries = json.loads(Path(path).read_text()).get("entries", {})


def write(b: Bench, out=None, md=None, table_csv=None, autotune_path=None):
    """The JSON report (out), the Markdown report (md), and the rows appended to table_csv."""
    load_autotune(b, autotune_path)
    report = {"meta": b.meta, "rows": b.rows, "skipped": b.skipped,
              "summary": summary(b.rows)}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1))
    if md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(markdown(b))
    if table_csv:
        table.append(b.rows, b.meta, Path(out).name if out else "", table_csv)
