"""Where runs execute. matrix.py hands Jobs to an Executor and polls their states; it never
knows whether they run here or on a cluster.

The seam (every executor):
  capacity(cfgs, jobs) -> n  runs at once; raises ConfigError, before anything is recorded,
                             when this machine (or cluster) cannot run cfgs
  slots(jobs) -> k           how many of these queued jobs may be submitted now
  submit_all(jobs) -> [h]    start them; each handle is a JSON-able dict, kept by matrix.py in
                             the matrix folder (handles.jsonl) so a later `make` re-attaches
  poll(timeout) -> {id: State}  the state of every job this executor tracks
  cancel(handle)             stop one job (from any process: `make cancel`)
  attach(handle) -> bool     track a recorded job again if it is still live
  preview(jobs, n, mdir) -> [line]  what submit_all would do, doing nothing (make dry-run)
  runs_here                  whether the jobs run on this machine (so its GPUs matter)

LocalExecutor: up to `jobs` subprocesses at once on this machine. A job that asks for
g GPUs gets g free GPUs of its own (CUDA_VISIBLE_DEVICES) and runs under torchrun, one
process per GPU. The environment is passed on whole (NCCL_* and friends included).
Children die with the runner (PR_SET_PDEATHSIG), so a killed `make` leaves no orphan
writing into a run that `make continue` is about to resume. The SLURM executor is
scripts/engine/slurm.py.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from lib import fsio
from lib.paths import REPO
from lib.runconfig import ConfigError


@dataclass
class Job:
    run_id: str
    script: str                 # <model>/train.py
    args: list                  # e.g. ["--config", ".../config.json"]
    log_path: str               # stdout+stderr of the process
    gpus: int = 0               # 0 = CPU
    env: dict = field(default_factory=dict)


def job_for(cfg, out_dir: str = "") -> Job:
    """The Job of a planned run whose folder is out_dir (default cfg.out_dir)."""
    out_dir = out_dir or cfg.out_dir
    return Job(run_id=cfg.run_id(), script=os.path.join(REPO, cfg.model, "train.py"),
               args=["--config", os.path.join(out_dir, "config.json")],
               log_path=os.path.join(out_dir, "output.log"),
               gpus=cfg.gpus if cfg.device == "cuda" else 0)


@dataclass
class State:
    """pending: waiting for resources (SLURM PENDING); running; ended (rc if known, else
    None: the run's status.json says how it went); vanished: gone with no record (a
    cancelled pending SLURM task), which the runner counts as cancelled."""
    state: str
    rc: int | None = None
    where: str = ""             # "pid 1234", "n1", "Priority"
    restarts: int = 0

    def label(self) -> str:
        if self.state == "pending":
            s = f"PENDING({self.where})" if self.where else "PENDING"
        elif self.state == "running":
            s = f"RUNNING@{self.where}" if self.where else "RUNNING"
        else:
            s = self.state.upper()
        return s + (f" requeued {self.restarts}x" if self.restarts else "")


def _die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def die_with_parent() -> None:
    """Called by the runner itself: if `make` is killed, the runner goes too."""
    _die_with_parent()


class Handles:
    """handles.jsonl in the matrix folder: one line per submission or cancellation; the
    newest line of a run wins."""

    def __init__(self, mdir: str):
        self.path = os.path.join(mdir, "handles.jsonl") if mdir else ""

    def record(self, handle: dict) -> None:
        if self.path:
            fsio.append_jsonl(self.path, {**handle, "at": time.time()})

    def latest(self) -> dict:
        out: dict = {}
        for line in fsio.read_jsonl(self.path) if self.path and os.path.exists(self.path) else []:
            if line.get("cancelled"):
                out.setdefault(line["run_id"], {})["cancelled"] = True
            else:
                out[line["run_id"]] = line
        return out


class Executor:
    kind = "?"
    detach_ok = False           # may `make` submit and return (DETACH=1)?
    runs_here = True            # do the jobs run on this machine (its GPUs matter)?

    def bind(self, mdir: str) -> None:
        """The matrix folder, for executors that keep files there (batch scripts, logs)."""

    def capacity(self, cfgs: list, jobs: int) -> int:
        raise NotImplementedError

    def slots(self, jobs: list) -> int:
        raise NotImplementedError

    def submit(self, job: Job) -> dict:
        raise NotImplementedError

    def submit_all(self, jobs: list) -> list:
        return [self.submit(j) for j in jobs]

    def poll(self, timeout: float = 0.0) -> dict:
        raise NotImplementedError

    def cancel(self, handle: dict) -> None:
        raise NotImplementedError

    def attach(self, handle: dict) -> bool:
        raise NotImplementedError

    def states(self, handles: list) -> dict:
        """{id: State} of recorded handles, live or not, without tracking them (make status)."""
        raise NotImplementedError

    def preview(self, jobs: list, n: int, mdir: str) -> list:
        """Lines saying what submit_all(jobs) would start, n at a time, for the matrix folder
        mdir; nothing is started or written."""
        raise NotImplementedError

    def stop_all(self) -> None:
        raise NotImplementedError


def gpu_count() -> int:
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, timeout=120).stdout.strip()
        return int(out or 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def pid_alive(pid: int, run_id: str) -> bool:
    """pid is a live process of this run (its command line names the run's config)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
    return run_id in cmd and not zombie


class LocalExecutor(Executor):
    kind = "local"

    def __init__(self, jobs: int = 1, gpu_ids: list[int] | None = None):
        self.jobs, self.free_gpus = max(1, jobs), list(gpu_ids or [])
        self.running: dict = {}          # Popen -> (job, gpus, logfile)
        self.foreign: dict = {}          # id -> handle: attached processes of another runner
        self.cuda = False

    # --- the seam --------------------------------------------------------------
    def capacity(self, cfgs: list, jobs: int = 0) -> int:
        """Count the GPUs; an error when the machine cannot run cfgs."""
        self.cuda = any(c.device == "cuda" for c in cfgs)
        ngpu = gpu_count() if self.cuda else 0
        if self.cuda and ngpu == 0:
            raise ConfigError("the plan runs on GPUs (device=cuda) but none is visible; use a CPU "
                              "defconfig (make defconfig-lenet5) or run on a GPU machine")
        per_run = max((c.gpus for c in cfgs), default=1) if self.cuda else 0
        if self.cuda and per_run > ngpu:
            raise ConfigError(f"a run asks for {per_run} GPUs (CONFIG_GPUS) but {ngpu} are visible")
        self.jobs = max(1, jobs or (max(1, ngpu // per_run) if self.cuda else 1))
        self.free_gpus = list(range(ngpu))
        self.where = f" on {ngpu} GPU(s)" if self.cuda else " on the CPU"
        return self.jobs

    def slots(self, jobs: list) -> int:
        free, gpus, n = self.free_slots() - len(self.foreign), len(self.free_gpus), 0
        for j in jobs:
            if free <= 0 or (j.gpus and gpus < j.gpus):
                break
            free, gpus, n = free - 1, gpus - j.gpus, n + 1
        return n

    def submit(self, job: Job) -> dict:
        proc = self._start(job)
        return {"run_id": job.run_id, "kind": self.kind, "id": f"{socket.gethostname()}:{proc.pid}",
                "pid": proc.pid}

    def poll(self, timeout: float = 0.0) -> dict:
        out = {}
        for job, rc, pid in self._wait(timeout):
            out[f"{socket.gethostname()}:{pid}"] = State("ended", rc)
        for p, (job, _, _) in self.running.items():
            out[f"{socket.gethostname()}:{p.pid}"] = State("running", where=f"pid {p.pid}")
        for hid, h in list(self.foreign.items()):
            if pid_alive(h["pid"], h["run_id"]):
                out[hid] = State("running", where=f"pid {h['pid']}")
            else:
                out[hid] = State("ended")
                del self.foreign[hid]
        return out

    def attach(self, handle: dict) -> bool:
        if handle.get("kind") != self.kind or not handle.get("pid"):
            return False
        if handle["id"].split(":")[0] != socket.gethostname():
            return False
        if pid_alive(handle["pid"], handle["run_id"]):
            self.foreign[handle["id"]] = handle
            return True
        return False

    def states(self, handles: list) -> dict:
        return {h["id"]: (State("running", where=f"pid {h['pid']}")
                          if h["id"].split(":")[0] == socket.gethostname()
                          and pid_alive(h["pid"], h["run_id"]) else State("ended"))
                for h in handles if h.get("kind") == self.kind and h.get("pid")}

    def preview(self, jobs: list, n: int, mdir: str) -> list:
        gpus = sorted({j.gpus for j in jobs})
        how = ("on the CPU, one process each" if gpus == [0] else
               f"{'/'.join(map(str, gpus))} GPU(s) each, pinned with CUDA_VISIBLE_DEVICES"
               + (", under torchrun" if max(gpus) > 1 else ""))
        at = f"{n} at a time" if n else "one per free GPU (1 on the CPU) at a time"
        return [f"local executor: {len(jobs)} run(s) as processes of this machine, {at}, {how}"]

    def cancel(self, handle: dict) -> None:
        """SIGTERM: the trainer checkpoints, writes `interrupted` and exits."""
        if pid_alive(handle["pid"], handle["run_id"]):
            os.kill(handle["pid"], signal.SIGTERM)

    # --- processes -------------------------------------------------------------
    def free_slots(self) -> int:
        return self.jobs - len(self.running)

    def command(self, job: Job) -> list:
        if job.gpus > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={job.gpus}", job.script, *job.args]
        return [sys.executable, job.script, *job.args]

    def _start(self, job: Job):
        env = dict(os.environ, **job.env, PYTHONUNBUFFERED="1")
        # OpenMP threads that spin while waiting starve other runs and the runner on a small
        # CPU box (5-10x slower ResNet smoke runs beside one busy process); passive waiting
        # changes no numerics. A user's own setting wins.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        gpus = []
        if job.gpus:
            if len(self.free_gpus) < job.gpus:
                raise RuntimeError(f"{job.run_id} needs {job.gpus} GPUs, {len(self.free_gpus)} free")
            gpus, self.free_gpus = self.free_gpus[:job.gpus], self.free_gpus[job.gpus:]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
        log = open(job.log_path, "ab")
        proc = subprocess.Popen(self.command(job), stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent, start_new_session=False)
        self.running[proc] = (job, gpus, log)
        return proc

    def _wait(self, timeout: float | None) -> list:
        t0 = time.time()
        while True:
            done = [(p, p.poll()) for p in list(self.running)]
            done = [(p, rc) for p, rc in done if rc is not None]
            if done:
                out = []
                for p, rc in done:
                    job, gpus, log = self.running.pop(p)
                    log.close()
                    self.free_gpus = sorted(self.free_gpus + gpus)
                    out.append((job, rc, p.pid))
                return out
            if timeout is not None and time.time() - t0 >= timeout:
                return []
            time.sleep(0.2)

    def wait_any(self, timeout: float | None = None) -> list:
        """Block until at least one job ends (or `timeout` seconds pass: then []); return
        [(job, returncode), ...]."""
        return [(job, rc) for job, rc, _ in self._wait(timeout)]

    def stop_all(self) -> None:
        for p in list(self.running):
            p.send_signal(signal.SIGTERM)
        for p in list(self.running):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def make(settings: dict | None) -> Executor:
    """The executor a plan's settings (plan.json "executor", from CONFIG_EXECUTOR_*) name."""
    settings = settings or {}
    if settings.get("kind", "local") == "local":
        return LocalExecutor()
    if settings["kind"] == "slurm":
        from scripts.engine.slurm import SlurmExecutor
        return SlurmExecutor(settings)
    raise ConfigError(f"unknown executor {settings['kind']!r} in plan.json")
