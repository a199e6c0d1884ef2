"""`make dry-run`: two CPU steps per planned run, a memory check and a wall-time estimate,
one table (docs/matrix.md).

The estimate of a run, best basis first: 'runs', the seconds per step of earlier finished
runs of the same shape; 'bench', for a GPU preset, the trainer's images/s that
scripts/bench/vision.py measured for the same model, batch, data path and compile mode on
the preset's GPU (the newest such row of results/benchmarks.csv, its date and device
stated); 'cpu', the second CPU dry-run step scaled.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time

from lib import fsio, runrecord
from lib.paths import BENCHMARKS, REPO, RUNS
from lib.runconfig import data_path
from scripts.engine import executor as executors, plan as planner, progress


def say(msg: str = "") -> None:
    print(msg, flush=True)


def cmd_dry_run(args, overrides: dict) -> int:
    t0 = time.time()
    p = planner.plan(args.config, overrides)
    for what, why in p.skipped:
        say(f"skip {what}: {why}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dryrun-") as tmp:
        by_model = {}
        for i, cfg in enumerate(p.runs):
            path = os.path.join(tmp, f"{i:04d}.json")
            fsio.atomic_write_json(path, cfg.to_dict())
            by_model.setdefault(cfg.model, []).append(path)
        for model, paths in by_model.items():
            out = os.path.join(tmp, f"{model}-report.json")
            argv = [sys.executable, os.path.join(REPO, model, "train.py"), "--dry-run",
                    "--dry-run-report", out]
            for path in paths:
                argv += ["--config", path]
            proc = subprocess.run(argv, capture_output=True, text=True)
            got = fsio.read_json(out)
            if got is None:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                got = [{"run_id": fsio.read_json(pth)["model"] + " (all runs)", "params": 0,
                        "est_peak_mb": 0, "gpu_mb": 0, "status": "FAIL",
                        "reason": f"{model}/train.py --dry-run crashed: {err}"} for pth in paths[:1]]
            rows += got
    ex = executors.make(p.executor)
    if not ex.runs_here:     # this machine's GPUs do not matter: the scheduler's nodes have them
        for r in rows:
            r["warnings"] = [w for w in r.get("warnings") or [] if not w.startswith("gpu:")]
    history, rates = finished_step_times(), bench_rates()
    cfgs = {c.run_id(): c for c in p.runs}
    for r in rows:
        r["est_s"], r["basis"] = estimate(r, history)
        cfg = cfgs.get(r["run_id"])
        if r["basis"] != "runs" and cfg is not None and cfg.device == "cuda" and r.get("planned_steps"):
            got = bench_estimate(cfg, p.hw, r["planned_steps"], rates)
            if got:
                r["est_s"], r["basis"], r["bench"] = got[0], "bench", got[1]
    w = max([len(r["run_id"]) for r in rows] + [3])
    say(f"{'run':<{w}}  {'params':>12}  {'est. peak':>10}  {'GPU mem':>8}  {'est. time':>9}  result")
    for r in rows:
        gpu = f"{r['gpu_mb']/1024:.0f} GiB" if r.get("gpu_mb") else "cpu"
        status = "WARN" if r["status"] == "OK" and r.get("warnings") else r["status"]
        eta = f"{progress.fmt_time(r['est_s'])} {r['basis']}" if r["est_s"] is not None else "?"
        say(f"{r['run_id']:<{w}}  {r['params']:>12,}  {r['est_peak_mb']:>7.0f} MB  {gpu:>8}  "
            f"{eta:>9}  {status}{'  ' + r['reason'] if r['reason'] else ''}")
    bad = [r for r in rows if r["status"] != "OK"]
    warned = [r for r in rows if r["status"] == "OK" and r.get("warnings")]
    jobs = args.jobs or p.jobs or 1
    known = [r["est_s"] for r in rows if r["est_s"] is not None]
    if known:
        total = sum(known) / jobs
        basis = sorted({r["basis"] for r in rows if r["est_s"] is not None})
        why = []
        if "runs" in basis:
            why.append("'runs': seconds per step of earlier finished runs of the same model, "
                       "device and batch in results/runs")
        for line in sorted({r["bench"] for r in rows if r.get("basis") == "bench"}):
            why.append(f"'bench': {line}")
        if "cpu" in basis:
            why.append("'cpu': the second CPU dry-run step, scaled to the batch and the planned "
                       "steps" + ("; CPU-BASED ESTIMATE for a GPU preset (device=cuda): the "
                                  "GPU run will be far faster" if any(
                                      r["device"] == "cuda" and r["basis"] == "cpu" for r in rows) else ""))
        unknown = len(rows) - len(known)
        say(f"estimated wall time: {progress.fmt_time(total)} for the matrix at JOBS={jobs}"
            + (f" ({unknown} run(s) without an estimate)" if unknown else ""))
        for line in why:
            say(f"  {line}")
    mdir = planner.matrix_dir_for(p.name, [{"run_id": c.run_id()} for c in p.runs])
    for line in ex.preview([executors.job_for(c, os.path.join(RUNS, c.run_id())) for c in p.runs],
                           args.jobs or p.jobs, mdir):
        say(line)
    say(f"dry-run: {len(rows) - len(bad)}/{len(rows)} OK in {time.time() - t0:.1f}s"
        + (f", {len(warned)} with warnings" if warned else ""))
    by_msg: dict = {}
    for r in warned:
        for wmsg in r["warnings"]:
            by_msg.setdefault(wmsg, []).append(r["run_id"])
    for wmsg, ids in by_msg.items():      # what the real run needs and this machine lacks
        which = ids[0] if len(ids) == 1 else (f"all {len(ids)} runs" if len(ids) == len(rows)
                                              else f"{len(ids)} runs: {', '.join(ids[:3])}"
                                                   + (", ..." if len(ids) > 3 else ""))
        say(f"WARN {wmsg} ({which})")
    for r in bad:
        say(f"FAIL {r['run_id']}: {r['reason']}")
    return 1 if bad else 0


def finished_step_times() -> dict:
    """(model, device, gpus, batch_size) -> [seconds per step] of the finished runs on disk."""
    out: dict = {}
    if not os.path.isdir(RUNS):
        return out
    for rid in os.listdir(RUNS):
        d = os.path.join(RUNS, rid)
        if runrecord.read_status(d).get("status") != "done":
            continue
        s = fsio.read_json(os.path.join(d, "summary.json"), {}) or {}
        c = fsio.read_json(os.path.join(d, "config.json"), {}) or {}
        if s.get("wall_time_s") and s.get("steps") and c.get("model"):
            key = (c["model"], c.get("device"), c.get("gpus", 1), c.get("batch_size"))
            out.setdefault(key, []).append(float(s["wall_time_s"]) / int(s["steps"]))
    return out


def bench_rates(path: str = BENCHMARKS) -> list:
    """The training-throughput rows of the benchmark table (scripts/bench/vision.py's):
    [{model, batch, data_path, compile_mode, device, date, trainer_img_s}], oldest first."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("op") == "train_vision"
                and r.get("model") and r.get("trainer_img_s")]


def bench_estimate(cfg, hw: str, steps: int, rates: list):
    """(seconds, label) of `steps` optimizer steps at the trainer's images/s measured for
    this run's model, batch, data path and compile mode on the preset's GPU (hw, e.g. h200,
    within the row's device name), from the newest such row; None without one."""
    want = (cfg.model, str(cfg.batch_size), data_path(cfg), cfg.compile_mode)
    match = [r for r in rates if (r["model"], r["batch"], r["data_path"],
                                  r.get("compile_mode") or "default") == want
             and hw and hw != "cpu" and hw.lower() in r["device"].lower()]
    if cfg.gpus != 1 or not match:
        return None
    row = max(enumerate(match), key=lambda t: (t[1]["date"], t[0]))[1]   # ties: the last
    rate = float(row["trainer_img_s"])
    epochs = f"{cfg.epochs} epochs, " if not cfg.max_steps else ""
    return steps * cfg.batch_size / rate, (
        f"{cfg.model} batch {cfg.batch_size} ({data_path(cfg)} data path, compile "
        f"{cfg.compile_mode}): {epochs}{steps:,} steps at {rate:,.0f} img/s, the trainer's "
        f"rate measured on {row['device']} on {row['date']} (results/benchmarks.csv, "
        f"scripts/bench/vision.py, with SGD); training steps only, without evaluation and "
        f"compile")


def estimate(row: dict, history: dict) -> tuple:
    """(seconds, basis) for one dry-run row: earlier runs of the same shape, else the CPU
    dry-run step scaled; (None, "") without a planned step count."""
    steps = row.get("planned_steps")
    if not steps:
        return None, ""
    times = history.get((row.get("model"), row.get("device"), row.get("gpus", 1), row.get("batch_size")))
    if times:
        return sorted(times)[len(times) // 2] * steps, "runs"
    if row.get("cpu_est_s") is not None:
        return row["cpu_est_s"], "cpu"
    return None, ""


