"""The report of scripts/bench/gpu_multi.sh: read its work folder (one results root per phase,
phases.txt, killed.txt) and write multi-gpu.json and multi-gpu.md.

  python -m scripts.bench.multi_gpu_report <work> <out> [--kill-at N]

Figures: tokens/s of each run (the trainer's median over its logged windows, as in its
summary.json); scaling = tokens/s on N GPUs / on 1 GPU (targets: >= 1.8x on 2, >= 3.5x on 4);
the largest train-loss gap between the 1- and N-GPU curves after step 20 (same global batch,
so they agree within bf16 noise); JOBS=2: each run's tokens/s against the same run alone
(target: no slowdown over 10 percent) and the GPU samples of each (both busy); the kill:
seconds from the SIGKILL of rank 1 to the run's status `failed` (target: within a minute),
its reason, and the resumed run's final loss against the uninterrupted g2 run's.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time


from lib import fsio


def runs(work: str, phase: str) -> dict:
    """run id -> {status, summary, config, train rows, system rows} of one phase."""
    out = {}
    for d in sorted(glob.glob(os.path.join(work, phase, "runs", "*"))):
        rows = fsio.read_jsonl(os.path.join(d, "metrics.jsonl")) if os.path.exists(
            os.path.join(d, "metrics.jsonl")) else []
        out[os.path.basename(d)] = {
            "status": fsio.read_json(os.path.join(d, "status.json"), default={}) or {},
            "summary": fsio.read_json(os.path.join(d, "summary.json"), default={}) or {},
            "config": fsio.read_json(os.path.join(d, "config.json"), default={}) or {},
            "train": [r for r in rows if r.get("kind") == "train"],
            "system": [r for r in rows if r.get("kind") == "system"]}
    return out


def one(work: str, phase: str) -> dict | None:
    r = runs(work, phase)
    return next(iter(r.values()), None)


def brief(r: dict | None) -> dict | None:
    if r is None:
        return None
    s, st, c = r["summary"], r["status"], r["config"]
    util = [x["gpu_util"] for x in r["system"] if x.get("gpu_util") is not None]
    return {"status": st.get("status"), "reason": st.get("reason"), "gpus": c.get("gpus"),
            "optimizer": c.get("optimizer"), "grad_accum": c.get("grad_accum"),
            "batch_size": c.get("batch_size"), "steps": s.get("steps"),
            "tokens_per_s": s.get("throughput"), "final_train_loss": s.get("train_loss"),
            "eval_loss": s.get("eval_loss"), "peak_memory_mb": s.get("peak_memory_mb"),
            "wall_s": s.get("wall_time_s"), "gpu_util_mean": statistics.mean(util) if util else None,
            "gpu_samples": len(util), "gpu": (st.get("environment") or {}).get("gpu"),
            "loss_curve": [[x["step"], x["loss"]] for x in r["train"]]}


def curve_gap(a: list, b: list, skip: int = 20) -> float | None:
    la, lb = dict(map(tuple, a)), dict(map(tuple, b))
    common = [s for s in la if s in lb and s > skip]
    return max(abs(la[s] - lb[s]) for s in common) if common else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--kill-at", type=int, default=0)
    args = ap.parse_args(argv)
    W = args.work
    phases = []
    if os.path.exists(os.path.join(W, "phases.txt")):
        for line in open(os.path.join(W, "phases.txt")):
            name, cmd, rc, t0, t1 = line.split()
            phases.append({"phase": name, "command": cmd, "exit": int(rc),
                           "seconds": float(t1) - float(t0)})
    doc = {"date": time.strftime("%Y-%m-%d"), "phases": phases}
    g = {n: brief(one(W, n)) for n in ("g1", "g2", "g4")}
    doc["runs"] = {n: v for n, v in g.items() if v}
    first = doc["runs"].get("g1") or {}
    doc["device"] = first.get("gpu") or "cpu"
    base = first.get("tokens_per_s")
    doc["scaling"] = {}
    for n in ("g2", "g4"):
        r = doc["runs"].get(n)
        if r and base and r.get("tokens_per_s"):
            doc["scaling"][n] = {"gpus": r["gpus"], "ratio": r["tokens_per_s"] / base,
                                 "target": 1.8 if n == "g2" else 3.5,
                                 "loss_gap_vs_g1": curve_gap(first["loss_curve"], r["loss_curve"])}

    solo = {b["optimizer"]: b for b in (brief(r) for r in runs(W, "solo").values())}
    if first:
        solo.setdefault(first.get("optimizer"), first)
    doc["jobs2"] = []
    for rid, r in runs(W, "jobs2").items():
        b = brief(r)
        alone = solo.get(b["optimizer"])
        b["run_id"] = rid
        b["alone_tokens_per_s"] = alone and alone["tokens_per_s"]
        b["slowdown"] = (1 - b["tokens_per_s"] / alone["tokens_per_s"]
                         if alone and alone.get("tokens_per_s") and b.get("tokens_per_s") else None)
        b["cuda_visible_devices"] = (r["status"].get("environment") or {}).get(
            "cuda_visible_devices")
        doc["jobs2"].append(b)

    kill = {"kill_at_step": args.kill_at}
    killed = os.path.join(W, "killed.txt")
    k = one(W, "kill")
    if os.path.exists(killed) and k:
        t_kill = float(open(killed).read().split()[-1])
        stopped = [p for p in phases if p["phase"] == "kill" and p["command"] == "run"]
        kill["killed"] = open(killed).read().strip()
        kill["run_exit"] = stopped[0]["exit"] if stopped else None
        path = os.path.join(W, "kill", "status-after-kill.json")
        after = fsio.read_json(path, default=None) if os.path.exists(path) else None
        kill["status_after_kill"] = after
        if after and after.get("stopped"):
            kill["seconds_to_failed"] = after["stopped"] - t_kill
    if k:
        kb = brief(k)
        kill["final"] = {x: kb[x] for x in ("status", "steps", "final_train_loss", "eval_loss")}
        ref = doc["runs"].get("g2") or {}
        if ref.get("final_train_loss") is not None and kb.get("final_train_loss") is not None:
            kill["final_loss_diff_vs_g2"] = kb["final_train_loss"] - ref["final_train_loss"]
            kill["eval_loss_diff_vs_g2"] = kb["eval_loss"] - ref["eval_loss"]
    doc["kill"] = kill
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "multi-gpu.json"), "w") as f:
        json.dump(doc, f, indent=2)
    md = markdown(doc)
    with open(os.path.join(args.out, "multi-gpu.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def markdown(doc: dict) -> str:
    L = [f"# Several GPUs of one host: {doc['device']}, {doc['date']}", "",
         "`scripts/bench/gpu_multi.sh` in one device run, through the matrix runner; numbers from "
         "each run's summary.json and metrics.jsonl (multi-gpu.json holds them all).", "",
         "| run | GPUs | micro-steps | status | tokens/s | scaling | final train loss | eval loss | "
         "max loss gap vs 1 GPU (step > 20) | peak MiB (rank 0) |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n, r in doc["runs"].items():
        sc = doc["scaling"].get(n, {})
        L.append(f"| {n} | {r['gpus']} | {r['grad_accum']} | {r['status']} | {fmt(r['tokens_per_s'])} | "
                 f"{fmt(sc.get('ratio'), '.2f')}{'x (target ' + str(sc['target']) + 'x)' if sc else ''} | "
                 f"{fmt(r['final_train_loss'], '.4f')} | {fmt(r['eval_loss'], '.4f')} | "
                 f"{fmt(sc.get('loss_gap_vs_g1'), '.4f')} | {fmt(r['peak_memory_mb'])} |")
    L += ["", "## JOBS=2: two single-GPU runs at once", "",
          "| run | status | tokens/s together | alone | slowdown (target <= 10%) | GPU util mean (%) | GPU samples |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for b in doc["jobs2"]:
        L.append(f"| {b['run_id']} | {b['status']} | {fmt(b['tokens_per_s'])} | "
                 f"{fmt(b['alone_tokens_per_s'])} | {fmt(None if b['slowdown'] is None else 100 * b['slowdown'], '.1f')}% | "
                 f"{fmt(b['gpu_util_mean'], '.0f')} | {b['gpu_samples']} |")
    k = doc["kill"]
    L += ["", "## A rank killed mid-run", "",
          f"- {k.get('killed', 'no kill recorded')} (after step {k.get('kill_at_step')}); the "
          f"matrix run exited {k.get('run_exit')}; status then: "
          f"{(k.get('status_after_kill') or {}).get('status')} "
          f"({(k.get('status_after_kill') or {}).get('reason')}), "
          f"{fmt(k.get('seconds_to_failed'), '.1f')} s after the kill.",
          f"- `continue`: {k.get('final', {}).get('status')} at step {k.get('final', {}).get('steps')}; "
          f"final train loss - uninterrupted g2's: {fmt(k.get('final_loss_diff_vs_g2'), '.2e')}, "
          f"eval loss: {fmt(k.get('eval_loss_diff_vs_g2'), '.2e')}."]
    L += ["", "## Phases", "", "| phase | command | exit | seconds |", "|---|---|---:|---:|"]
    L += [f"| {p['phase']} | {p['command']} | {p['exit']} | {p['seconds']:.0f} |" for p in doc["phases"]]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
