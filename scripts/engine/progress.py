"""Live progress of a running matrix, from each run's status.json (docs/matrix.md).

One line per running run (id, step/total, loss, throughput, ETA) and one for the matrix
(done/running/queued, ETA from finished runs' seconds per step and the planned steps of
the rest). On a terminal the lines are redrawn in place (rich's Live); otherwise (CI,
`make | cat`, a log file) they are printed as plain lines every KNLP_PROGRESS_INTERVAL
seconds (default 30). The runs' own output goes to their output.log, never to this
stream, so the two cannot garble each other.

status.json may hold only status/step/total_steps (what the trainer writes at start and
end) or also loss, rate, unit, elapsed_s, eta_s and last_eval (written at every log
interval): each line shows what is there.
"""
from __future__ import annotations

import os
import sys
import time

from lib import fsio, runrecord

DEFAULT_INTERVAL = 30.0


def fmt_time(s) -> str:
    if s is None or s != s or s < 0:
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def elapsed(st: dict, now: float | None = None):
    if st.get("elapsed_s") is not None:
        return float(st["elapsed_s"])
    if st.get("status") == "running" and st.get("started"):
        return (now or time.time()) - float(st["started"])
    return None


def run_eta(st: dict, now: float | None = None):
    """Seconds left in a running run: its own eta_s, else elapsed time per step so far."""
    if st.get("eta_s") is not None:
        return max(0.0, float(st["eta_s"]))
    step, total, el = st.get("step"), st.get("total_steps"), elapsed(st, now)
    if step and total and el is not None:
        return el / step * max(0, total - step)
    return None


def detail(st: dict, now: float | None = None) -> str:
    """step 120/540  loss 0.4123  1,234 samples/s  ETA 42s, from whatever fields are there."""
    parts = []
    if st.get("step") is not None:
        parts.append(f"step {st['step']}/{st.get('total_steps', '?')}")
    if st.get("loss") is not None:
        parts.append(f"loss {float(st['loss']):.4f}")
    if st.get("rate") is not None:
        parts.append(f"{float(st['rate']):,.0f} {st.get('unit') or 'samples'}/s")
    ev = st.get("last_eval") or {}
    for k, v in ev.items():
        if k != "step" and isinstance(v, (int, float)):
            parts.append(f"{k} {v:.2f}")
            break
    if st.get("status") == "running":
        eta = run_eta(st, now)
        if eta is not None:
            parts.append(f"ETA {fmt_time(eta)}")
    return "  ".join(parts)


def run_line(rid: str, st: dict, now: float | None = None) -> str:
    state = st.get("status") if st.get("status") not in (None, "queued") else "starting"
    return f"{rid}  {detail(st, now) or state}"


def finished_wall(run_dir: str, st: dict):
    """(wall seconds, steps) of a finished run, or None."""
    s = fsio.read_json(os.path.join(run_dir, "summary.json"), {}) or {}
    if s.get("wall_time_s") and s.get("steps"):
        return float(s["wall_time_s"]), int(s["steps"])
    if st.get("started") and st.get("stopped") and st.get("step"):
        return float(st["stopped"]) - float(st["started"]), int(st["step"])
    return None


def matrix_eta(finished: list, running: list, queued: list, jobs: int, now: float | None = None):
    """Seconds until the matrix is done.

    finished: [(wall_s, steps)] of runs that ended; running: their status dicts; queued:
    the planned step counts of runs not started (None where unknown: then the mean of the
    known counts). Seconds per step come
    from finished runs, else from running runs' elapsed time per step; the work left is
    spread over `jobs` slots but is never less than the longest running run."""
    done_s = sum(w for w, _ in finished)
    done_steps = sum(n for _, n in finished)
    per_step = done_s / done_steps if done_steps else None
    if per_step is None:
        rates = [(elapsed(st, now), st.get("step")) for st in running]
        rates = [(e, n) for e, n in rates if e is not None and n]
        if rates:
            per_step = sum(e for e, _ in rates) / sum(n for _, n in rates)
    left_running = []
    for st in running:
        eta = run_eta(st, now)
        if eta is None and per_step is not None and st.get("total_steps"):
            eta = per_step * max(0, st["total_steps"] - (st.get("step") or 0))
        left_running.append(eta)
    if any(e is None for e in left_running) or (queued and per_step is None):
        return None
    # a queued run whose step count is not known yet: like the runs whose count is
    known = [n for n in queued if n] + [st["total_steps"] for st in running if st.get("total_steps")]
    known += [n for _, n in finished]
    mean = sum(known) / len(known) if known else None
    if any(not n for n in queued) and mean is None:
        return None
    queued_s = sum((n or mean) * per_step for n in queued) if queued else 0.0
    total = sum(left_running) + queued_s
    return max(total / max(1, jobs), max(left_running, default=0.0))


class Display:
    """Start/finish events from the runner, tick() once a second while runs are going."""

    def __init__(self, cfgs: list, jobs: int, run_dir, stream=None, interval: float | None = None):
        self.cfgs = {c.run_id(): c for c in cfgs}
        self.jobs, self.run_dir = jobs, run_dir
        self.stream = stream or sys.stdout
        if interval is None:
            interval = float(os.environ.get("KNLP_PROGRESS_INTERVAL") or DEFAULT_INTERVAL)
        self.interval = interval
        self.running, self.done, self.walls = [], set(), []
        self.steps_seen: dict = {}                  # shape of a run -> its total_steps
        self.live, self.last_plain = None, 0.0
        isatty = getattr(self.stream, "isatty", lambda: False)()
        if isatty and os.environ.get("TERM", "dumb") not in ("dumb", "unknown", ""):
            from rich.console import Console
            from rich.live import Live
            console = Console(file=self.stream, highlight=False)
            self.live = Live(console=console, auto_refresh=False, transient=True,
                             redirect_stdout=self.stream is sys.stdout,
                             redirect_stderr=self.stream is sys.stdout)

    @staticmethod
    def shape(cfg) -> tuple:
        # runs that differ only in optimizer/pruning take the same number of steps
        return (cfg.model, getattr(cfg, "dataset", ""), cfg.batch_size, cfg.epochs, cfg.max_steps)

    def planned_steps(self, cfg):
        return cfg.max_steps or self.steps_seen.get(self.shape(cfg))

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)
        return False

    def started(self, rid: str) -> None:
        self.running.append(rid)
        self.last_plain = time.time() - self.interval + min(self.interval, 2.0)

    def finished(self, rid: str) -> None:
        if rid in self.running:
            self.running.remove(rid)
        self.done.add(rid)
        st = runrecord.read_status(self.run_dir(rid))
        w = finished_wall(self.run_dir(rid), st)
        if w and st.get("status") == "done":
            self.walls.append(w)

    def lines(self, now: float | None = None) -> list:
        now = now or time.time()
        sts = {rid: runrecord.read_status(self.run_dir(rid)) for rid in self.running}
        for rid, st in sts.items():
            if st.get("total_steps") and rid in self.cfgs:
                self.steps_seen[self.shape(self.cfgs[rid])] = st["total_steps"]
        queued = [self.planned_steps(c) for rid, c in self.cfgs.items()
                  if rid not in self.done and rid not in sts]
        eta = matrix_eta(self.walls, list(sts.values()), queued, self.jobs, now)
        out = [run_line(rid, st, now) for rid, st in sts.items()]
        out.append(f"matrix: {len(self.done)}/{len(self.cfgs)} done, {len(sts)} running, "
                   f"{len(queued)} queued, ETA {fmt_time(eta)}")
        return out

    def tick(self) -> None:
        now = time.time()
        if self.live:
            from rich.text import Text
            self.live.update(Text("\n".join("  " + ln for ln in self.lines(now))), refresh=True)
        elif self.running and now - self.last_plain >= self.interval:
            self.last_plain = now
            for ln in self.lines(now):
                print(f"  .. {ln}", file=self.stream, flush=True)
