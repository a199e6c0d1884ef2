"""Run, continue, dry-run and report the test matrix described by .config.

  python -m scripts.engine.matrix run [--force] [--jobs N] [--time S] [--models DIR] [--baseline RUN]
  python -m scripts.engine.matrix continue            # the most recent matrix, with its own config
  python -m scripts.engine.matrix dry-run             # two CPU steps per run, memory check, table
  python -m scripts.engine.matrix update-graphs       # every matrix, from files on disk
  python -m scripts.engine.matrix archive             # copy the latest matrix's key results
  python -m scripts.engine.matrix status              # where the latest matrix stands

Layout (docs/architecture.md):
  results/runs/<run_id>/            one folder per run, shared by all matrices (make semantics)
  results/matrices/<name>-<hash>/   config, plan.json, invocations.jsonl, summary.*, *.png
  results/matrices/LATEST           name of the most recent matrix folder
  results/archive/<date>-<name>/    tracked copy of the key results
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time


from lib import fsio, runrecord
from lib.runconfig import ConfigError, config_class
from scripts.engine import plan as planner, progress, report, run_main
from scripts.engine.executor import Job, LocalExecutor, die_with_parent

from lib.paths import MATRICES, REPO, RESULTS, RUNS

LATEST = os.path.join(MATRICES, "LATEST")


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Lock:
    """One matrix runner per tree: a second `make` refuses instead of corrupting the first."""

    def __init__(self):
        os.makedirs(RESULTS, exist_ok=True)
        self.path = os.path.join(RESULTS, ".lock")
        self.f = open(self.path, "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.seek(0)
            pid = self.f.read().strip() or "?"
            raise ConfigError(f"another matrix is running in this tree (pid {pid}, lock "
                              f"{os.path.relpath(self.path, REPO)}); wait for it or stop it first")
        self.f.seek(0)
        self.f.truncate()
        self.f.write(str(os.getpid()))
        self.f.flush()


# -----------------------------------------------------------------------------
# plans on disk

def run_record(cfg) -> dict:
    """A run's entry in plan.json: every field, the non-semantic ones too (workers, log and
    monitor cadence, compile mode, trackio project...), so `continue` runs it as planned."""
    d = cfg.to_dict()
    d["run_id"] = cfg.run_id()
    return d


def matrix_dir_for(name: str, records: list) -> str:
    h = hashlib.sha256(" ".join(sorted(r["run_id"] for r in records)).encode()).hexdigest()[:8]
    return os.path.join(MATRICES, f"{name}-{h}")


def record_to_cfg(rec: dict):
    d = {k: v for k, v in rec.items() if k != "run_id"}
    cfg = config_class(rec["model"]).from_dict(d, source="plan.json").validate()
    if cfg.run_id() != rec["run_id"]:
        raise ConfigError(f"plan.json entry {rec['run_id']} no longer hashes to its id (the "
                          f"config schema changed); start the matrix afresh with `make`")
    return cfg


def latest_matrix() -> str:
    try:
        name = open(LATEST).read().strip()
    except FileNotFoundError:
        raise ConfigError("no matrix has been started in this tree; run `make` first") from None
    path = os.path.join(MATRICES, name)
    if not os.path.exists(os.path.join(path, "plan.json")):
        raise ConfigError(f"{path}/plan.json is missing; run `make` to plan afresh")
    return path


# -----------------------------------------------------------------------------
# executing

def gpu_count() -> int:
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, timeout=120).stdout.strip()
        return int(out or 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def describe_result(rid: str) -> str:
    st = runrecord.read_status(report.run_dir(rid))
    s = fsio.read_json(os.path.join(report.run_dir(rid), "summary.json"), {}) or {}
    if st.get("status") != "done":
        return f"{st.get('status', 'failed')}: {st.get('reason', '')}"
    m = s.get("primary_metric", "")
    return (f"{m} {s.get('eval_' + m, float('nan')):.2f}  sparsity {s.get('sparsity', 0):.3f}  "
            f"{s.get('wall_time_s', 0):.1f}s")


def settle(job, rc: int) -> int:
    """Record how a run's process ended (a crash before the trainer could say so is
    failed), print its result line; 1 if it did not finish."""
    st = runrecord.read_status(report.run_dir(job.run_id)).get("status")
    if rc != 0 and st not in ("failed", "interrupted"):
        runrecord.write_status(report.run_dir(job.run_id), "failed",
                               reason=f"process exited with code {rc}; see output.log")
    elif rc == 0 and st != "done":
        runrecord.write_status(report.run_dir(job.run_id), "failed",
                               reason="process exited without finishing; see output.log")
    say(f"       {'done ' if rc == 0 else 'FAIL '} {job.run_id}  {describe_result(job.run_id)}")
    return int(rc != 0 or st != "done")


def capacity(cfgs: list) -> tuple[bool, int, int]:
    """(on GPUs?, GPUs visible, GPUs per run); an error when the machine cannot run cfgs,
    raised before anything is recorded."""
    cuda = any(c.device == "cuda" for c in cfgs)
    ngpu = gpu_count() if cuda else 0
    if cuda and ngpu == 0:
        raise ConfigError("the plan runs on GPUs (device=cuda) but none is visible; use a CPU "
                          "defconfig (make defconfig-lenet5) or run on a GPU machine")
    per_run = max((c.gpus for c in cfgs), default=1) if cuda else 0
    if cuda and per_run > ngpu:
        raise ConfigError(f"a run asks for {per_run} GPUs (CONFIG_GPUS) but {ngpu} are visible")
    return cuda, ngpu, per_run


def execute(cfgs: list, jobs: int) -> int:
    """Run cfgs (already written to their run folders); return how many failed."""
    cuda, ngpu, per_run = capacity(cfgs)
    if not jobs:
        jobs = max(1, ngpu // per_run) if cuda else 1
    ex = LocalExecutor(jobs, list(range(ngpu)))
    queue, failed, n, started = list(cfgs), 0, len(cfgs), 0
    say(f"running {n} run(s), {jobs} at a time" + (f" on {ngpu} GPU(s)" if cuda else " on the CPU"))
    display = progress.Display(cfgs, jobs, report.run_dir)
    try:
        with display:
            while queue or ex.running:
                while queue and ex.free_slots() > 0 and (not cuda or len(ex.free_gpus) >= queue[0].gpus):
                    cfg = queue.pop(0)
                    started += 1
                    rid = cfg.run_id()
                    say(f"[{started:>3}/{n}] start {rid}")
                    ex.submit(Job(run_id=rid, script=os.path.join(REPO, cfg.model, "train.py"),
                                  args=["--config", os.path.join(cfg.out_dir, "config.json")],
                                  log_path=os.path.join(cfg.out_dir, "output.log"),
                                  gpus=cfg.gpus if cuda else 0))
                    display.started(rid)
                for job, rc in ex.wait_any(timeout=1.0):
                    failed += settle(job, rc)
                    display.finished(job.run_id)
                display.tick()
    except KeyboardInterrupt:
        say("interrupted: stopping runs (they checkpoint and can be resumed with `make continue`)")
        ex.stop_all()
        raise
    return failed


def prepare(cfgs: list, force: bool) -> tuple[list, list]:
    """Split into (pending, up_to_date); write each pending run's config.json."""
    pending, fresh = [], []
    for cfg in cfgs:
        rid = cfg.run_id()
        cfg.out_dir = report.run_dir(rid)
        st = runrecord.read_status(cfg.out_dir).get("status")
        if st == "done" and not force:
            fresh.append(cfg)
            continue
        if force and os.path.exists(cfg.out_dir):
            shutil.rmtree(cfg.out_dir)
            if cfg.models_dir and os.path.exists(cfg.models_dir):
                shutil.rmtree(cfg.models_dir)
        pending.append(cfg)
    for cfg in pending:
        os.makedirs(cfg.out_dir, exist_ok=True)
        fsio.atomic_write_json(os.path.join(cfg.out_dir, "config.json"), cfg.to_dict())
        if runrecord.read_status(cfg.out_dir).get("status") is None:
            runrecord.write_status(cfg.out_dir, "queued")
    return pending, fresh


def redraw(mdir: str, baseline) -> tuple:
    """One matrix's summary (Markdown, CSV) and graphs, from the files on disk alone."""
    doc = fsio.read_json(os.path.join(mdir, "plan.json"))
    rows = report.collect(doc["runs"], baseline)
    text = report.write_summary(mdir, rows, f"Matrix {doc['name']}")
    return doc, text, report.graphs(mdir, rows, baseline)


def finish(mdir: str, baseline, failed: int) -> int:
    _, text, _ = redraw(mdir, baseline)
    say("")
    say(text)
    say("")
    say(f"results: {os.path.relpath(mdir, REPO)}/ (summary.md, summary.csv, *.png)")
    say(f"archived: {os.path.relpath(report.archive(mdir), REPO)}/")
    if failed:
        say(f"{failed} run(s) failed; fix the cause and `make continue` resumes them")
    return 1 if failed else 0


# -----------------------------------------------------------------------------
# commands

def plan_overrides(args) -> dict:
    """The make variables that change what a matrix plans: TIME, MODELS, SEEDS (or SEED)."""
    overrides = {}
    if args.time is not None:
        overrides["time_budget"] = float(args.time)
    if args.models:
        overrides["models_root"] = args.models
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    return overrides


def cmd_run(args) -> int:
    p = planner.plan(args.config, plan_overrides(args))
    if args.baseline:
        report.find_baseline(args.baseline)      # fail before anything runs
    capacity(p.runs)                             # ... or is recorded as the latest matrix
    lock = Lock()                                # noqa: F841  (held until exit)
    for what, why in p.skipped:
        say(f"skip {what}: {why}")
    records = [run_record(c) for c in p.runs]
    mdir = matrix_dir_for(p.name, records)
    os.makedirs(mdir, exist_ok=True)
    shutil.copyfile(args.config, os.path.join(mdir, "config"))
    fsio.atomic_write_json(os.path.join(mdir, "plan.json"),
                           {"name": p.name, "hw": p.hw, "jobs": p.jobs, "runs": records,
                            "skipped": [list(s) for s in p.skipped]})
    fsio.atomic_write_text(LATEST, os.path.basename(mdir) + "\n")
    pending, fresh = prepare(p.runs, args.force)
    fsio.append_jsonl(os.path.join(mdir, "invocations.jsonl"),
                      {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": "run",
                       "pending": len(pending), "force": args.force})
    if not pending:
        say(f"all {len(fresh)} runs of matrix {p.name} are up to date "
            f"({os.path.relpath(mdir, REPO)}); FORCE=1 re-runs them")
        return 0
    say(f"matrix {p.name}: {len(pending)} to run, {len(fresh)} up to date -> {os.path.relpath(mdir, REPO)}")
    failed = execute(pending, args.jobs or p.jobs)
    return finish(mdir, args.baseline, failed)


def cmd_continue(args) -> int:
    mdir = latest_matrix()
    lock = Lock()                                # noqa: F841
    doc = fsio.read_json(os.path.join(mdir, "plan.json"))
    cfgs = [record_to_cfg(r) for r in doc["runs"]]
    pending, fresh = prepare(cfgs, force=False)
    fsio.append_jsonl(os.path.join(mdir, "invocations.jsonl"),
                      {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": "continue",
                       "pending": len(pending)})
    say(f"continuing {os.path.relpath(mdir, REPO)}: {len(pending)} to run or resume, "
        f"{len(fresh)} done")
    failed = execute(pending, args.jobs or doc.get("jobs", 0)) if pending else 0
    return finish(mdir, args.baseline, failed)


def cmd_dry_run(args) -> int:
    t0 = time.time()
    p = planner.plan(args.config, plan_overrides(args))
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
    history = finished_step_times()
    for r in rows:
        r["est_s"], r["basis"] = estimate(r, history)
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
    jobs = p.jobs or 1
    known = [r["est_s"] for r in rows if r["est_s"] is not None]
    if known:
        total = sum(known) / jobs
        basis = sorted({r["basis"] for r in rows if r["est_s"] is not None})
        why = []
        if "runs" in basis:
            why.append("'runs': seconds per step of earlier finished runs of the same model, "
                       "device and batch in results/runs")
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


def all_matrices() -> list:
    if not os.path.isdir(MATRICES):
        return []
    return sorted(os.path.join(MATRICES, d) for d in os.listdir(MATRICES)
                  if os.path.exists(os.path.join(MATRICES, d, "plan.json")))


def cmd_update_graphs(args) -> int:
    mats = all_matrices()
    if not mats:
        raise ConfigError("no matrix under results/matrices; run `make` first")
    for mdir in mats:
        for path in redraw(mdir, args.baseline)[2]:
            say(f"wrote {os.path.relpath(path, REPO)}")
    return 0


def cmd_archive(args) -> int:
    mdir = latest_matrix()
    redraw(mdir, args.baseline)
    say(f"archived: {os.path.relpath(report.archive(mdir), REPO)}/")
    return 0


def cmd_status(args) -> int:
    mdir = latest_matrix()
    doc = fsio.read_json(os.path.join(mdir, "plan.json"))
    rows = report.collect(doc["runs"], args.baseline)
    say(f"matrix {doc['name']} ({os.path.relpath(mdir, REPO)})")
    now = time.time()
    for r in rows:
        st = runrecord.read_status(report.run_dir(r["run_id"]))
        say(f"  {r['status']:<12} {r['run_id']:<55} {progress.detail(st, now)}".rstrip())
    return 0


# which make variable each command reads; any other given is refused by name, not ignored
USES = {"run": {"jobs", "time", "models", "baseline", "seeds", "force"},
        "continue": {"jobs", "baseline"},
        "dry-run": {"time", "models", "seeds"},
        "update-graphs": {"baseline"}, "archive": {"baseline"}, "status": {"baseline"}}
VARIABLES = {"jobs": "JOBS", "time": "TIME", "models": "MODELS", "baseline": "BASELINE",
             "seeds": "SEEDS/SEED", "force": "FORCE"}


def refuse_ignored(args) -> None:
    given = [k for k, v in (("jobs", args.jobs), ("time", args.time), ("models", args.models),
                            ("baseline", args.baseline), ("seeds", args.seeds),
                            ("force", args.force)) if v not in (None, "", 0, False)]
    ignored = [k for k in given if k not in USES[args.command]]
    if ignored:
        hint = (" (`make continue` resumes the recorded plan as it was; `make` re-plans)"
                if args.command == "continue" else "")
        raise SystemExit(f"error: {', '.join(VARIABLES[k] + '=' for k in ignored)} does nothing "
                         f"for `make {args.command}`{hint}; drop it")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "continue", "dry-run", "update-graphs", "archive", "status"])
    ap.add_argument("--config", default=os.path.join(REPO, ".config"))
    ap.add_argument("--force", action="store_true", help="re-run finished runs (FORCE=1)")
    ap.add_argument("--jobs", type=int, default=0, help="runs in parallel (JOBS=n)")
    ap.add_argument("--time", type=float, default=None, help="per-run wall-clock budget (TIME=s)")
    ap.add_argument("--models", default="", help="checkpoint root (MODELS=dir)")
    ap.add_argument("--baseline", default="", help="run id to compare against (BASELINE=id)")
    ap.add_argument("--seeds", default=None, help="seeds of every cell (SEEDS=\"1 2 3\", SEED=n)")
    args = ap.parse_args(argv)
    refuse_ignored(args)
    if args.command in ("run", "continue"):
        die_with_parent()
    cmd = {"run": cmd_run, "continue": cmd_continue, "dry-run": cmd_dry_run,
           "update-graphs": cmd_update_graphs, "archive": cmd_archive, "status": cmd_status}
    try:
        return cmd[args.command](args)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    run_main(main)
