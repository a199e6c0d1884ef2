"""Where runs execute. The runner hands Jobs to an Executor and waits for them to end; it
never knows whether they ran here or on a cluster.

LocalExecutor: up to `jobs` subprocesses at once on this machine. A job that asks for
g GPUs gets g free GPUs of its own (CUDA_VISIBLE_DEVICES) and runs under torchrun, one
process per GPU. The environment is passed on whole (NCCL_* and friends included).
Children die with the runner (PR_SET_PDEATHSIG), so a killed `make` leaves no orphan
writing into a run that `make continue` is about to resume.

A SLURM executor (job arrays, torchrun across nodes) implements the same three methods.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Job:
    run_id: str
    script: str                 # <model>/train.py
    args: list                  # e.g. ["--config", ".../config.json"]
    log_path: str               # stdout+stderr of the process
    gpus: int = 0               # 0 = CPU
    env: dict = field(default_factory=dict)


def _die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def die_with_parent() -> None:
    """Called by the runner itself: if `make` is killed, the runner goes too."""
    _die_with_parent()


class Executor:
    def submit(self, job: Job) -> None:
        raise NotImplementedError

    def free_slots(self) -> int:
        raise NotImplementedError

    def wait_any(self, timeout: float | None = None) -> list:
        """Block until at least one job ends (or `timeout` seconds pass: then []); return
        [(job, returncode), ...]."""
        raise NotImplementedError

    def stop_all(self) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    def __init__(self, jobs: int, gpu_ids: list[int] | None = None):
        self.jobs, self.free_gpus = max(1, jobs), list(gpu_ids or [])
        self.running: dict = {}          # Popen -> (job, gpus, logfile)

    def free_slots(self) -> int:
        return self.jobs - len(self.running)

    def command(self, job: Job) -> list:
        if job.gpus > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={job.gpus}", job.script, *job.args]
        return [sys.executable, job.script, *job.args]

    def submit(self, job: Job) -> None:
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

    def wait_any(self, timeout: float | None = None) -> list:
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
                    out.append((job, rc))
                return out
            if timeout is not None and time.time() - t0 >= timeout:
                return []
            time.sleep(0.2)

    def stop_all(self) -> None:
        for p in list(self.running):
            p.send_signal(signal.SIGTERM)
        for p in list(self.running):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
