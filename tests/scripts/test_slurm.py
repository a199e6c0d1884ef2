"""The SLURM executor against a real SLURM on loopback (tests/slurm_cluster.py): the LeNet-5
matrix equals the local one; each array task gets its own fake GPU; a killed `make`, one
cancelled running and one cancelled pending task, then `make continue`: live tasks adopted,
the cancelled ones resumed, none started twice. Skipped with the reason when SLURM cannot
be installed (not root, apt fails)."""
import csv
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import PY, REPO, run_cmd, write_config
from slurm_cluster import Cluster, ensure_installed

pytestmark = pytest.mark.slurm
MATRIX = os.path.join(REPO, "scripts", "engine", "matrix.py")
TINY = """CONFIG_MATRIX_NAME="tiny"
CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE=y
CONFIG_MATRIX_SPARSITY_LEVELS="0.7"
CONFIG_LENET5_EPOCHS=2
CONFIG_CHECKPOINT_INTERVAL=10
# CONFIG_TRACKIO is not set
CONFIG_MONITOR_INTERVAL="0"
"""
SLURM = """CONFIG_EXECUTOR_SLURM=y
CONFIG_SLURM_CPUS_PER_GPU=1
CONFIG_SLURM_POLL_INTERVAL=1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = ensure_installed()
    if why:
        pytest.skip(f"no loopback SLURM: {why}")
    if os.geteuid() != 0:
        pytest.skip("the loopback SLURM runs its daemons as root; these tests need root")
    c = Cluster(str(tmp_path_factory.mktemp("slurm")))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def summary(results):
    mdir = open(results / "matrices" / "LATEST").read().strip()
    with open(results / "matrices" / mdir / "summary.csv") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}, results / "matrices" / mdir


def matrix(cmd, *extra, results, timeout=600):
    return run_cmd([PY, MATRIX, cmd, *extra], env_extra={"KNLP_RESULTS": str(results),
                                                         "KNLP_PROGRESS_INTERVAL": "5"},
                   timeout=timeout)


def test_the_matrix_through_slurm_equals_the_local_one(cluster, tmp_path):
    local = write_config(tmp_path / "local.config", TINY)
    slurm = write_config(tmp_path / "slurm.config", TINY + SLURM)
    p = matrix("run", "--config", local, "--jobs", "2", results=tmp_path / "a")
    assert p.returncode == 0, p.stdout + p.stderr
    p = matrix("run", "--config", slurm, "--jobs", "2", results=tmp_path / "b")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "(slurm " in p.stdout, "the runs went through sbatch"
    a, _ = summary(tmp_path / "a")
    b, mdir = summary(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 3
    for rid in a:
        for col in ("status", "primary_value", "eval_loss", "sparsity", "steps"):
            assert a[rid][col] == b[rid][col], (rid, col, a[rid][col], b[rid][col])
    man = json.load(open(mdir / "slurm" / "manifest-0.json"))
    assert sorted(man["tasks"].values()) == sorted(a)
    assert "#SBATCH --array=0-2%2" in open(mdir / "slurm" / "array-0.sh").read()
    assert list((mdir / "slurm").glob(f"{man['job']}_*.out"))
    for rid in a:
        rec = json.load(open(tmp_path / "b" / "runs" / rid / "slurm.json"))
        assert rec["job"].startswith(man["job"] + "_") and rec["node"] in ("n1", "n2")


def test_each_array_task_sees_its_own_fake_gpu(cluster, tmp_path, monkeypatch):
    from scripts.engine import slurm
    from scripts.engine.executor import Job
    monkeypatch.setattr(slurm, "RUNS", str(tmp_path / "runs"))
    probe = tmp_path / "probe.py"
    probe.write_text("import os, time; print('CVD', os.environ.get('CUDA_VISIBLE_DEVICES')); "
                     "time.sleep(3)\n")
    ex = slurm.SlurmExecutor({"kind": "slurm", "cpus_per_gpu": 1, "poll_interval": 1,
                              "sbatch_args": "--nodelist=n1"})
    ex.bind(str(tmp_path / "m"))
    ex.capacity([], 0)
    jobs = [Job(f"probe{i}", str(probe), [], str(tmp_path / f"p{i}.log"), gpus=1) for i in range(2)]
    handles = ex.submit_all(jobs)
    assert [h["id"].split("_")[1] for h in handles] == ["0", "1"], "one array, two tasks"
    deadline = time.time() + 90
    while ex.tracked:
        assert time.time() < deadline, "the probe tasks did not end"
        ex.poll(timeout=1.0)
    seen = [json.load(open(tmp_path / "runs" / f"probe{i}" / "slurm.json")) for i in range(2)]
    assert sorted(s["cuda_visible_devices"] for s in seen) == ["0", "1"], seen
    assert all(s["node"] == "n1" for s in seen)
    out = [open(tmp_path / "runs" / f"probe{i}" / "output.log").read() for i in range(2)]
    assert sorted(o.split()[1] for o in out) == ["0", "1"], out


def squeue():
    p = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True)
    return dict(line.split("|") for line in p.stdout.split())


def test_killed_make_cancel_and_continue(cluster, tmp_path):
    """SIGKILL of `make` mid-array: the tasks go on. Cancel one running and one pending task:
    both end `interrupted` (cancelled). `make continue` adopts the live one, resubmits only
    the two cancelled, and every run ends done; the interrupted one resumed."""
    results = tmp_path / "results"
    cfg = write_config(tmp_path / ".config", TINY.replace("EPOCHS=2", "EPOCHS=3") + SLURM)
    # each task rests 15 s at step 12, after its first checkpoint (step 10): the running task
    # is still running when the test cancels it, however loaded the machine is
    env = dict(os.environ, KNLP_RESULTS=str(results), KNLP_SLOW_STEP="12:15")
    runner = subprocess.Popen([PY, MATRIX, "run", "--config", cfg, "--jobs", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(results.glob("runs/*/checkpoints/ckpt_*.pt")):
        assert time.time() < deadline and runner.poll() is None, "no checkpoint in time"
        time.sleep(0.2)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    mdir = results / "matrices" / open(results / "matrices" / "LATEST").read().strip()
    handles = [json.loads(line) for line in open(mdir / "handles.jsonl")]
    q = squeue()
    state = {h["run_id"]: q.get(h["id"]) for h in handles}
    running = [r for r, s in state.items() if s == "RUNNING"]
    pending = [r for r, s in state.items() if s == "PENDING"]
    assert len(running) == 1 and len(pending) == 2, (state, "the tasks outlive the runner")
    st = matrix("status", results=results)
    assert "RUNNING@n" in st.stdout and "PENDING(" in st.stdout, st.stdout
    print(st.stdout)
    for rid in (running[0], pending[0]):
        p = matrix("cancel", "--run", rid[:40], results=results, timeout=120)
        assert p.returncode == 0 and f"cancel {rid}" in p.stdout, p.stdout + p.stderr
    for rid in (running[0], pending[0]):
        rec = json.load(open(results / "runs" / rid / "status.json"))
        assert rec["status"] == "interrupted", rec
    assert squeue().get(next(h["id"] for h in handles if h["run_id"] == pending[1])) in (
        "PENDING", "RUNNING"), "the other task is untouched"
    p = matrix("continue", results=results)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"adopt {pending[1]}" in p.stdout, p.stdout
    subs = [json.loads(line) for line in open(mdir / "handles.jsonl")]
    count = {r: sum(1 for h in subs if h["run_id"] == r and h.get("id")) for r in state}
    assert count == {running[0]: 2, pending[0]: 2, pending[1]: 1}, count
    assert "resumed from" in open(results / "runs" / running[0] / "train.log").read()
    got, _ = summary(results)
    assert all(r["status"] == "done" for r in got.values()), got
