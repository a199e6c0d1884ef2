"""Helpers of the model tests: run a model's train.py as a user does, and the exact-resume
check (an uninterrupted run vs one SIGKILLed after its first checkpoint and restarted)."""
import json
import os
import signal
import subprocess
import time

import torch

from conftest import PY, REPO, run_cmd

# One thread per process: on the shared 2-core host two OpenMP threads per process spin
# against the other processes and ran a tiny ResNet step 30x slower (2.6 s vs 78 ms).
ENV = {"OMP_NUM_THREADS": "1"}


def argv(model: str, out, args) -> list:
    return [PY, os.path.join(REPO, model, "train.py"), "--out-dir", str(out),
            "--monitor-interval", "0", *args]


def train(model: str, out, args, check=True):
    return run_cmd(argv(model, out, args), env_extra=ENV, check=check)


def summary(out) -> dict:
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def train_losses(out) -> list:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["loss"] for r in rows if r.get("kind") == "train"]


def killed_and_resumed(model: str, a, b, args, first_ckpt: int) -> str:
    """Run `a` uninterrupted while `b` runs until ckpt_<first_ckpt> exists, is SIGKILLed,
    and is restarted with the same arguments. Returns b's second stdout."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **ENV)
    full = subprocess.Popen(argv(model, a, args), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(argv(model, b, args), env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = os.path.join(b, "checkpoints", f"ckpt_{first_ckpt:08d}.pt")
    deadline = time.time() + 120
    while not os.path.exists(ckpt):
        assert victim.poll() is None, f"{model} run ended before writing {ckpt}"
        assert time.time() < deadline, f"{model}: no checkpoint {ckpt} within 120 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with open(os.path.join(b, "status.json")) as f:
        assert json.load(f)["status"] == "running", "the kill must land mid-run"
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out[-3000:]
    resumed = train(model, b, args)
    assert f"resumed from {ckpt}" in resumed.stdout, resumed.stdout[-2000:]
    return resumed.stdout


def batch_sums(out) -> dict:
    """step -> the input checksums a run with KNLP_BATCH_SUMS=1 logged (rank 0). A step run
    twice (past the last checkpoint before a kill, and again after the resume) must have
    seen the same batches both times."""
    seen = {}
    with open(os.path.join(out, "batch_sums.rank0.jsonl")) as f:
        for row in map(json.loads, f):
            assert seen.setdefault(row["step"], row["sums"]) == row["sums"], row["step"]
    return seen


def assert_identical(a, b) -> None:
    sa, sb = summary(a), summary(b)
    keys = [k for k in sa if k.startswith("eval_")] + ["train_loss", "steps", "sparsity"]
    assert {k: sa[k] for k in keys} == {k: sb[k] for k in keys}
    wa = torch.load(os.path.join(a, "checkpoints", "model.pt"))
    wb = torch.load(os.path.join(b, "checkpoints", "model.pt"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
