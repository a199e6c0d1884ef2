"""DDP through torchrun on the CPU (gloo): two ranks with the same global batch train like
one process, and a rank that dies ends the whole job quickly instead of hanging it."""
import json
import os
import subprocess
import time

import pytest

from conftest import PY, REPO

TRAIN = os.path.join(REPO, "lenet5", "train.py")
# SGD: Adam's first steps amplify the last-bit differences of a split gradient sum
ARGS = ["--optimizer", "sgd", "--lr", "0.05", "--batch-size", "32", "--max-steps", "8",
        "--log-interval", "1", "--checkpoint-interval", "4", "--monitor-interval", "0"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def rows(out, kind):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("kind") == kind]


def test_two_ranks_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    procs = [subprocess.Popen([PY, TRAIN, "--out-dir", str(one), *ARGS], env=ENV, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
             subprocess.Popen([*TORCHRUN, TRAIN, "--out-dir", str(two), *ARGS], env=ENV, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    assert "(= 2 procs x 1 accum x 16)" in open(two / "train.log").read()
    a, b = rows(one, "train"), rows(two, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6), ra["step"]
    sa = json.load(open(one / "summary.json"))
    sb = json.load(open(two / "summary.json"))
    assert sb["eval_loss"] == pytest.approx(sa["eval_loss"], rel=1e-5)
    assert sb["eval_accuracy"] == pytest.approx(sa["eval_accuracy"], abs=1e-9)
    assert json.load(open(two / "status.json"))["status"] == "done"


def test_a_dead_rank_ends_the_job(tmp_path):
    out = tmp_path / "r"
    env = dict(ENV, KNLP_CRASH_AT="1:3")
    t0 = time.time()
    p = subprocess.run([*TORCHRUN, TRAIN, "--out-dir", str(out), *ARGS], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    assert p.returncode != 0
    assert "KNLP_CRASH_AT: rank 1 crashes at step 3" in p.stdout + p.stderr
    assert took < 60, f"the job took {took:.0f}s to notice its dead rank"
    st = json.load(open(out / "status.json"))
    assert st["status"] in ("failed", "interrupted"), st
