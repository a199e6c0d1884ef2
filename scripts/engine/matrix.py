"""Run, continue, dry-run and report the test matrix described by .config.

  python -m scripts.engine.matrix run [--force] [--jobs N] [--time S] [--models DIR] [--baseline RUN]
  python -m scripts.engine.matrix continue            # the most recent matrix, with its own config
  python -m scripts.engine.matrix dry-run             # two CPU steps per run, memory check, table
  python -m scripts.engine.matrix update-graphs       # every matrix, from files on disk
  python -m scripts.engine.matrix archive             # copy the latest matrix's key results
  python -m scripts.engine.matrix status              # where the latest matrix stands
  python -m scripts.engine.matrix cancel [--run ID]   # stop its runs (all, or by id prefix)

Layout (docs/architecture.md):
  results/runs/<run_id>/            one folder per run, shared by all matrices (make semantics)
  results/matrices/<name>-<hash>/   config, plan.json, invocations.jsonl, summary.*, *.png
  results/matrices/LATEST           name of the most recent matrix folder
  results/archive/<date>-<name>/    tracked copy of the key results
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import time


from lib import fsio, runrecord
from lib.preempt import EXIT_PREEMPTED
from lib.runconfig import ConfigError, config_class
from scripts.engine import dryrun, executor as executors, plan as planner, progress, report, run_main
from scripts.engine.executor import Handles, State, die_with_parent, job_for
from scripts.engine.plan import matrix_dir_for

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

def describe_result(rid: str) -> str:
    st = runrecord.read_status(report.run_dir(rid))
    s = fsio.read_json(os.path.join(report.run_dir(rid), "summary.json"), {}) or {}
    if st.get("status") != "done":
        return f"{st.get('status', 'failed')}: {st.get('reason', '')}"
    m = s.get("primary_metric", "")
    return (f"{m} {s.get('eval_' + m, float('nan')):.2f}  sparsity {s.get('sparsity', 0):.3f}  "
            f"{s.get('wall_time_s', 0):.1f}s")


def settle(h: dict, st: State, cancelled: bool = False) -> int:
    """Record how a run's job ended (a crash before the trainer could say so is failed; a
    job cancelled or vanished without a word is interrupted), print its result line; 1 if
    it did not finish."""
    d = report.run_dir(h["run_id"])
    status = runrecord.read_status(d).get("status")
    rc, final = st.rc, ("done", "failed", "interrupted")
    if st.state == "vanished" or (cancelled and status != "done"):
        if status not in final:
            runrecord.write_status(d, "interrupted", reason=f"cancelled ({h['kind']} {h['id']}); "
                                   "`make continue` resumes it")
    elif status == "preempted" and rc in (None, EXIT_PREEMPTED):
        # the trainer checkpointed on the signal and its job ended instead of requeueing
        runrecord.write_status(d, "failed", reason=(
            f"preempted and not requeued ({h['kind']} job {h['id']}; under SLURM: past "
            f"CONFIG_SLURM_MAX_REQUEUES, or the site cancels on preemption); `make continue` "
            f"resumes it from its checkpoint"))
    elif rc is not None and rc != 0 and status not in ("failed", "interrupted"):
        runrecord.write_status(d, "failed", reason=f"process exited with code {rc}; see output.log")
    elif rc == 0 and status != "done":
        runrecord.write_status(d, "failed", reason="process exited without finishing; see output.log")
    elif rc is None and status not in final:
        runrecord.write_status(d, "failed", reason=f"{h['kind']} job {h['id']} ended without a "
                               f"final status; see output.log")
    now = runrecord.read_status(d).get("status")
    bad = (rc not in (0, None)) or now != "done"
    label = "done " if not bad else ("cancel" if now == "interrupted" and cancelled else "FAIL ")
    say(f"       {label} {h['run_id']}  {describe_result(h['run_id'])}")
    return int(bad)


def live_handles(ex, mdir: str) -> dict:
    """run id -> handle of the recorded jobs of mdir that are still pending or running."""
    book = {r: h for r, h in Handles(mdir).latest().items() if h.get("id")}
    states = ex.states(list(book.values())) if book else {}
    return {r: h for r, h in book.items()
            if states.get(h["id"], State("ended")).state in ("pending", "running")}


def execute(cfgs: list, jobs: int, ex=None, mdir: str = "", detach: bool = False) -> int:
    """Run cfgs (already written to their run folders) through the executor, adopting the
    ones mdir's handles show still live; return how many failed."""
    ex = ex or executors.LocalExecutor()
    jobs = ex.capacity(cfgs, jobs)
    ex.bind(mdir)
    book = Handles(mdir)
    recorded = book.latest()
    live: dict = {}                                # handle id -> handle
    queue = []
    for cfg in cfgs:
        h = recorded.get(cfg.run_id())
        if h and h.get("id") and ex.attach(h):
            live[h["id"]] = h
        else:
            queue.append(cfg)
    n, started, failed = len(cfgs), len(live), 0
    say(f"running {n} run(s), {jobs} at a time{getattr(ex, 'where', '')}")
    display = progress.Display(cfgs, jobs, report.run_dir)
    try:
        with display:
            for h in live.values():
                say(f"       adopt {h['run_id']}  ({ex.kind} {h['id']}, still live)")
                display.started(h["run_id"])
            while queue or live:
                k = ex.slots([job_for(c) for c in queue]) if queue else 0
                if k:
                    batch, queue = queue[:k], queue[k:]
                    for h in ex.submit_all([job_for(c) for c in batch]):
                        started += 1
                        book.record(h)
                        live[h["id"]] = h
                        say(f"[{started:>3}/{n}] start {h['run_id']}"
                            + (f"  ({ex.kind} {h['id']})" if ex.kind != "local" else ""))
                        display.started(h["run_id"])
                    if detach and not queue:
                        say(f"submitted; `make status` shows where the runs stand, `make continue`"
                            f" waits for them, `make cancel` stops them")
                        return 0
                for hid, st in ex.poll(timeout=1.0).items():
                    if hid in live and st.state in ("ended", "vanished"):
                        h = live.pop(hid)
                        cancelled = bool(Handles(mdir).latest().get(h["run_id"], {}).get("cancelled")) \
                            if mdir else False
                        failed += settle(h, st, cancelled)
                        display.finished(h["run_id"])
                display.tick()
    except KeyboardInterrupt:
        if ex.kind == "local":
            say("interrupted: stopping runs (they checkpoint and can be resumed with `make continue`)")
        else:
            say(f"interrupted: the {ex.kind} jobs go on; `make continue` re-attaches, "
                f"`make cancel` stops them")
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
    text = report.write_summary(mdir, rows, f"Matrix {doc['name']}", baseline)
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
    if args.baseline and not any(c.run_id().startswith(args.baseline) for c in p.runs):
        report.find_baseline(args.baseline)      # not in this plan: fail before anything runs
    ex = executors.make(p.executor)
    ex.capacity(p.runs, args.jobs or p.jobs)     # ... or is recorded as the latest matrix
    detach = wants_detach(args, p.executor, ex)
    lock = Lock()                                # noqa: F841  (held until exit)
    for what, why in p.skipped:
        say(f"skip {what}: {why}")
    records = [run_record(c) for c in p.runs]
    mdir = matrix_dir_for(p.name, records)
    if args.force and live_handles(ex, mdir):
        raise ConfigError(f"FORCE=1 while {len(live_handles(ex, mdir))} run(s) of this matrix are "
                          f"still live ({ex.kind}); `make cancel` them first or wait")
    os.makedirs(mdir, exist_ok=True)
    shutil.copyfile(args.config, os.path.join(mdir, "config"))
    fsio.atomic_write_json(os.path.join(mdir, "plan.json"),
                           {"name": p.name, "hw": p.hw, "jobs": p.jobs, "runs": records,
                            "skipped": [list(s) for s in p.skipped], "executor": p.executor})
    fsio.atomic_write_text(LATEST, os.path.basename(mdir) + "\n")
    pending, fresh = prepare(p.runs, args.force)
    fsio.append_jsonl(os.path.join(mdir, "invocations.jsonl"),
                      {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": "run",
                       "pending": len(pending), "force": args.force})
    if not pending:
        say(f"all {len(fresh)} runs of matrix {p.name} are up to date "
            f"({os.path.relpath(mdir, REPO)}); FORCE=1 re-runs them")
        if args.baseline:      # `make BASELINE=` on finished work: the summary against it
            say("")
            say(redraw(mdir, args.baseline)[1])
        return 0
    say(f"matrix {p.name}: {len(pending)} to run, {len(fresh)} up to date -> {os.path.relpath(mdir, REPO)}")
    failed = execute(pending, args.jobs or p.jobs, ex, mdir, detach)
    return 0 if detach else finish(mdir, args.baseline, failed)


def wants_detach(args, settings: dict, ex) -> bool:
    detach = bool(args.detach or settings.get("detach"))
    if detach and not ex.detach_ok:
        raise ConfigError(f"DETACH=1 needs a scheduler: the {ex.kind} executor's runs end with "
                          f"`make`; select CONFIG_EXECUTOR_SLURM or drop DETACH")
    return detach


def cmd_continue(args) -> int:
    mdir = latest_matrix()
    lock = Lock()                                # noqa: F841
    doc = fsio.read_json(os.path.join(mdir, "plan.json"))
    ex = executors.make(doc.get("executor"))
    detach = wants_detach(args, {}, ex)
    cfgs = [record_to_cfg(r) for r in doc["runs"]]
    pending, fresh = prepare(cfgs, force=False)
    fsio.append_jsonl(os.path.join(mdir, "invocations.jsonl"),
                      {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": "continue",
                       "pending": len(pending)})
    say(f"continuing {os.path.relpath(mdir, REPO)}: {len(pending)} to run or resume, "
        f"{len(fresh)} done")
    failed = execute(pending, args.jobs or doc.get("jobs", 0), ex, mdir, detach) if pending else 0
    return 0 if detach and pending else finish(mdir, args.baseline, failed)


def cmd_cancel(args) -> int:
    """Stop runs of the latest matrix (all, or RUN=<id prefix>) from any terminal: they end
    `interrupted` and `make continue` resumes them."""
    mdir = latest_matrix()
    doc = fsio.read_json(os.path.join(mdir, "plan.json"))
    ex = executors.make(doc.get("executor"))
    live = {r: h for r, h in live_handles(ex, mdir).items() if r.startswith(args.run or "")}
    if not live:
        say(f"nothing to cancel: no live run{' matching ' + args.run if args.run else ''} in "
            f"{os.path.relpath(mdir, REPO)}")
        return 0 if not args.run else 1
    book = Handles(mdir)
    for rid, h in live.items():
        book.record({"run_id": rid, "cancelled": True})
        ex.cancel(h)
        say(f"cancel {rid}  ({ex.kind} {h['id']})")
    deadline = time.time() + 60                  # the trainers checkpoint and say `interrupted`
    while time.time() < deadline and live_handles(ex, mdir).keys() & live.keys():
        time.sleep(0.5)
    for rid in live:
        d = report.run_dir(rid)
        if runrecord.read_status(d).get("status") not in ("done", "failed", "interrupted"):
            runrecord.write_status(d, "interrupted", reason="cancelled (make cancel); "
                                   "`make continue` resumes it")
    return 0


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
    ex = executors.make(doc.get("executor"))
    book = {r: h for r, h in Handles(mdir).latest().items() if h.get("id")}
    states = ex.states(list(book.values())) if book else {}
    say(f"matrix {doc['name']} ({os.path.relpath(mdir, REPO)}, {ex.kind} executor)")
    now = time.time()
    for r in rows:
        st = runrecord.read_status(report.run_dir(r["run_id"]))
        h = book.get(r["run_id"])
        s = states.get(h["id"]) if h else None
        where = f"{h['id']} {s.label()}" if s and s.state in ("pending", "running") else ""
        say(f"  {r['status']:<12} {r['run_id']:<55} {progress.detail(st, now)}"
            f"{'  [' + where + ']' if where else ''}".rstrip())
    return 0


# which make variable each command reads; any other given is refused by name, not ignored
USES = {"run": {"jobs", "time", "models", "baseline", "seeds", "force", "detach"},
        "continue": {"jobs", "baseline", "detach"}, "cancel": {"run"},
        "dry-run": {"jobs", "time", "models", "seeds"},
        "update-graphs": {"baseline"}, "archive": {"baseline"}, "status": {"baseline"}}
VARIABLES = {"jobs": "JOBS", "time": "TIME", "models": "MODELS", "baseline": "BASELINE",
             "seeds": "SEEDS/SEED", "force": "FORCE", "detach": "DETACH", "run": "RUN"}


def refuse_ignored(args) -> None:
    given = [k for k, v in (("jobs", args.jobs), ("time", args.time), ("models", args.models),
                            ("baseline", args.baseline), ("seeds", args.seeds),
                            ("force", args.force), ("detach", args.detach), ("run", args.run))
             if v not in (None, "", 0, False)]
    ignored = [k for k in given if k not in USES[args.command]]
    if ignored:
        hint = (" (`make continue` resumes the recorded plan as it was; `make` re-plans)"
                if args.command == "continue" else "")
        raise SystemExit(f"error: {', '.join(VARIABLES[k] + '=' for k in ignored)} does nothing "
                         f"for `make {args.command}`{hint}; drop it")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "continue", "cancel", "dry-run", "update-graphs",
                                        "archive", "status"])
    ap.add_argument("--config", default=os.path.join(REPO, ".config"))
    ap.add_argument("--force", action="store_true", help="re-run finished runs (FORCE=1)")
    ap.add_argument("--jobs", type=int, default=0, help="runs in parallel (JOBS=n)")
    ap.add_argument("--time", type=float, default=None, help="per-run wall-clock budget (TIME=s)")
    ap.add_argument("--models", default="", help="checkpoint root (MODELS=dir)")
    ap.add_argument("--baseline", default="", help="run id to compare against (BASELINE=id)")
    ap.add_argument("--seeds", default=None, help="seeds of every cell (SEEDS=\"1 2 3\", SEED=n)")
    ap.add_argument("--detach", action="store_true", help="submit and return (DETACH=1)")
    ap.add_argument("--run", default="", help="cancel: the runs whose id starts so (RUN=prefix)")
    args = ap.parse_args(argv)
    refuse_ignored(args)
    if args.command in ("run", "continue"):
        die_with_parent()
    cmd = {"run": cmd_run, "continue": cmd_continue, "cancel": cmd_cancel,
           "dry-run": lambda a: dryrun.cmd_dry_run(a, plan_overrides(a)),
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
