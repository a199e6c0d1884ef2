"""The SLURM executor against a real SLURM on loopback (tests/slurm_cluster.py), issue #22's
seven tests: the LeNet-5 matrix equals the local one; a task signalled after its first
checkpoint and one warned by its time limit requeue their own array task and end
bit-identical to the uninterrupted run, and past CONFIG_SLURM_MAX_REQUEUES the run fails
with the reason (with DETACH=1, the FORCE=1 refusal and re-attaching); a killed `make`,
one cancelled running and one cancelled pending task, then `make continue`: live tasks
adopted, the cancelled ones resumed, none started twice; a 2-node DDP run through srun
matches one process; a node set down mid-run requeues the task, which resumes; each array
task gets its own fake GPU. Skipped with the reason when SLURM cannot be installed (not
root, apt fails). All of them take about 3 minutes on 2 cores."""
import csv
import json
import os
import signal
import subprocess
import time

import pytest
import torch

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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny matrix through the local executor, uninterrupted: what every SLURM run of
    the same runs must equal."""
    d = tmp_path_factory.mktemp("reference")
    p = matrix("run", "--config", write_config(d / "local.config", TINY), "--jobs", "2",
               results=d / "results")
    assert p.returncode == 0, p.stdout + p.stderr
    return d / "results"


def assert_identical(reference, results, rid):
    """The run ended bit for bit where the uninterrupted local run did: final metrics and
    every weight."""
    a = json.load(open(reference / "runs" / rid / "summary.json"))
    b = json.load(open(results / "runs" / rid / "summary.json"))
    keys = [k for k in a if k.startswith("eval_")] + ["train_loss", "steps", "sparsity"]
    assert {k: b[k] for k in keys} == {k: a[k] for k in keys}, rid
    wa = torch.load(reference / "runs" / rid / "checkpoints" / "model.pt")
    wb = torch.load(results / "runs" / rid / "checkpoints" / "model.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), rid


def test_the_matrix_through_slurm_equals_the_local_one(cluster, reference, tmp_path):
    slurm = write_config(tmp_path / "slurm.config", TINY + SLURM)
    p = matrix("run", "--config", slurm, "--jobs", "2", results=tmp_path / "b")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "(slurm " in p.stdout, "the runs went through sbatch"
    a, _ = summary(reference)
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


def test_a_second_cluster_on_this_machine_is_independent(cluster, tmp_path):
    """Two test sessions on one machine: each cluster has its own munged socket, ports and
    state; starting and stopping a second one leaves the first serving."""
    def sinfo(conf):
        p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                           env=dict(os.environ, SLURM_CONF=conf))
        return p.stdout.split()
    first = os.environ["SLURM_CONF"]
    other = Cluster(str(tmp_path))
    try:
        other.start()
        assert other.munge_socket != cluster.munge_socket
        assert f"socket={other.munge_socket}" in open(os.environ["SLURM_CONF"]).read()
        assert sinfo(os.environ["SLURM_CONF"]) == ["n1", "idle", "n2", "idle"]
    finally:
        other.stop()
    assert os.environ["SLURM_CONF"] == first
    assert len(other.procs) == 4 and all(p.poll() is not None for p in other.procs), \
        "the second cluster's munged, slurmctld and slurmds are stopped"
    assert sinfo(first) == ["n1", "idle", "n2", "idle"], "the first cluster still serves"


def test_a_signal_during_start_up_is_neither_fatal_nor_lost(cluster, tmp_path, monkeypatch):
    """A preemption (or SLURM's time-limit timer) can signal a task at any moment: sent
    while the trainer is still starting, before its handler is installed, the signal does
    not kill it; the trainer finds it at install and exits EXIT_PREEMPTED."""
    from scripts.engine import slurm
    from scripts.engine.executor import Job
    monkeypatch.setattr(slurm, "RUNS", str(tmp_path / "runs"))
    probe = tmp_path / "probe.py"     # a trainer whose start-up (imports, data) takes 3 s
    probe.write_text("import sys, time; time.sleep(3)\n"     # lib/ from PYTHONPATH (conftest)
                     "from lib import preempt; preempt.install()\n"
                     "print('caught' if preempt.should_stop() else 'missed')\n"
                     "sys.exit(preempt.EXIT_PREEMPTED if preempt.should_stop() else 0)\n")
    ex = slurm.SlurmExecutor({"kind": "slurm", "cpus_per_gpu": 1, "poll_interval": 1,
                              "max_requeues": 0})
    ex.bind(str(tmp_path / "m"))
    ex.capacity([], 0)
    [h] = ex.submit_all([Job("early", str(probe), [], str(tmp_path / "early.log"))])
    rec = tmp_path / "runs" / "early" / "slurm.json"   # written once the script traps the signal
    wait_for("the task to start", rec.exists, timeout=60)
    scancel_signal(h["id"])
    wait_for("the task to end", lambda: not ex.poll(timeout=1.0) and not ex.tracked, timeout=60)
    log = open(tmp_path / "m" / "slurm" / f"{h['id']}.out").read()
    assert "trainer exited with 85 (restart 0)" in log, log
    assert "not requeued: restart 0 of CONFIG_SLURM_MAX_REQUEUES=0" in log, log
    assert open(tmp_path / "runs" / "early" / "output.log").read().split() == ["caught"]


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


def wait_for(what, cond, timeout=120, proc=None):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"the runner exited waiting for {what}"
        time.sleep(0.2)


def scancel_signal(task):
    p = subprocess.run(["scancel", "--signal=USR2", "--batch", task], capture_output=True, text=True)
    assert p.returncode == 0, f"scancel --signal=USR2 --batch {task}: {p.stderr}"


def test_signalled_tasks_requeue_themselves_and_end_bit_identical(cluster, reference, tmp_path):
    """`make DETACH=1` submits and returns; FORCE=1 is refused while the tasks are live; a
    later `make continue` re-attaches and waits. Task 0 gets `scancel --signal=USR2 --batch`
    after its first checkpoint, task 1 only the time-limit warning (--time=1 with
    --signal=B:USR2@10, which SLURM sends 20-50 s into the task): both checkpoint, requeue their own array task and end bit-identical
    to the uninterrupted local run. Task 2 is signalled again after its requeue: past
    CONFIG_SLURM_MAX_REQUEUES=1 it is not requeued and the run fails with that reason."""
    results = tmp_path / "results"
    # every task's first incarnation rests at step 12 (after its checkpoint at 10) until a
    # signal comes; task 2 rests again at step 14 after its requeue
    setup = ("[ ${SLURM_RESTART_COUNT:-0} = 0 ] && export KNLP_SLOW_STEP=12:120;"
             "[ ${SLURM_RESTART_COUNT:-0} != 0 ] && [ $SLURM_ARRAY_TASK_ID = 2 ] "
             "&& export KNLP_SLOW_STEP=14:120")
    cfg = write_config(tmp_path / ".config", TINY + SLURM + f"""CONFIG_SLURM_TIME_LIMIT="1"
CONFIG_SLURM_SIGNAL_LEAD=10
CONFIG_SLURM_MAX_REQUEUES=1
CONFIG_SLURM_SETUP="{setup}"
""")
    t0 = time.time()
    p = matrix("run", "--config", cfg, "--jobs", "3", "--detach", results=results)
    assert p.returncode == 0 and "submitted;" in p.stdout, p.stdout + p.stderr
    mdir = results / "matrices" / open(results / "matrices" / "LATEST").read().strip()
    man = json.load(open(mdir / "slurm" / "manifest-0.json"))
    rid = {int(i): r for i, r in man["tasks"].items()}
    task = {i: f"{man['job']}_{i}" for i in rid}
    q = squeue()
    assert all(q.get(t) in ("PENDING", "RUNNING") for t in task.values()), (q, "DETACH=1 left "
                                                                            "the tasks queued")
    p = matrix("run", "--config", cfg, "--force", results=results)
    assert p.returncode == 2 and "FORCE=1 while 3 run(s) of this matrix are still live" in p.stderr, \
        p.stdout + p.stderr
    assert all((results / "runs" / r / "config.json").exists() for r in rid.values()), \
        "the refused FORCE=1 deleted nothing"
    st = matrix("status", results=results)
    assert all(f"[{t} " in st.stdout for t in task.values()), st.stdout
    log = open(tmp_path / "continue.log", "w")
    cont = subprocess.Popen([PY, MATRIX, "continue"], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, KNLP_RESULTS=str(results)))
    ckpt = lambda i: (results / "runs" / rid[i] / "checkpoints" / "ckpt_00000010.pt").exists()  # noqa: E731
    for i in (0, 2):
        wait_for(f"the first checkpoint of {task[i]}", lambda: ckpt(i), proc=cont)
        assert json.load(open(results / "runs" / rid[i] / "slurm.json"))["restarts"] == 0, \
            f"{task[i]} was requeued before its first checkpoint: the time-limit warning (20 s " \
            f"into the task at the earliest) came first; the machine is too busy for this test"
        scancel_signal(task[i])

    def requeued_and_running(i):
        rec = json.load(open(results / "runs" / rid[i] / "slurm.json"))
        return rec["restarts"] == 1 and json.load(
            open(results / "runs" / rid[i] / "status.json"))["status"] == "running"
    wait_for(f"{task[2]} requeued and running again", lambda: requeued_and_running(2), proc=cont)
    st = matrix("status", results=results)         # it rests at step 14 until signalled
    line = next(ln for ln in st.stdout.splitlines() if rid[2] in ln)
    assert f"[{task[2]} RUNNING@n" in line and "requeued 1x]" in line, st.stdout
    scancel_signal(task[2])
    rc = cont.wait(timeout=180)
    out = open(tmp_path / "continue.log").read()
    print(out, f"took {time.time() - t0:.0f}s")
    assert rc == 1, out
    assert sum(f"adopt {r}" in out for r in rid.values()) == 3, out
    for i in (0, 1):
        assert_identical(reference, results, rid[i])
        rec = json.load(open(results / "runs" / rid[i] / "slurm.json"))
        assert rec["job"] == task[i] and rec["restarts"] == 1, rec
        assert "resumed from" in open(results / "runs" / rid[i] / "train.log").read()
        assert "USR2: forwarded to the trainer" in open(mdir / "slurm" / f"{task[i]}.out").read()
    st = json.load(open(results / "runs" / rid[2] / "status.json"))
    assert st["status"] == "failed" and "CONFIG_SLURM_MAX_REQUEUES" in st["reason"], st
    assert "not requeued: restart 1 of CONFIG_SLURM_MAX_REQUEUES=1" in open(
        mdir / "slurm" / f"{task[2]}.out").read()
    subs = [json.loads(line) for line in open(mdir / "handles.jsonl")]
    assert sorted(h["run_id"] for h in subs if h.get("id")) == sorted(rid.values()), \
        "each run submitted once: the requeues are SLURM's own"


def test_a_node_set_down_mid_run_requeues_the_task_and_it_resumes(cluster, reference, tmp_path):
    """`scontrol update nodename=<its node> state=down` after the task's first checkpoint:
    SLURM kills it (NODE_FAIL) and requeues it; it resumes from the checkpoint and ends
    bit-identical to the uninterrupted run, with no resubmission by the runner."""
    results = tmp_path / "results"
    setup = "[ ${SLURM_RESTART_COUNT:-0} = 0 ] && export KNLP_SLOW_STEP=12:120"
    cfg = write_config(tmp_path / ".config", TINY.replace("CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE=y\n", "")
                       + SLURM + f'CONFIG_SLURM_SETUP="{setup}"\n')
    log = open(tmp_path / "run.log", "w")
    runner = subprocess.Popen([PY, MATRIX, "run", "--config", cfg], stdout=log,
                              stderr=subprocess.STDOUT, env=dict(os.environ, KNLP_RESULTS=str(results)))
    wait_for("the run's first checkpoint", lambda: list(results.glob(
        "runs/*/checkpoints/ckpt_00000010.pt")), proc=runner)
    run = next(results.glob("runs/*/checkpoints/ckpt_00000010.pt")).parent.parent
    node = json.load(open(run / "slurm.json"))["node"]
    try:
        p = subprocess.run(["scontrol", "update", f"nodename={node}", "state=down",
                            "reason=knlp test"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        wait_for("the requeued task", lambda: json.load(open(run / "slurm.json"))["restarts"] == 1,
                 proc=runner)
        rc = runner.wait(timeout=120)
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                       capture_output=True)
    out = open(tmp_path / "run.log").read()
    assert rc == 0, out
    assert json.load(open(run / "status.json"))["status"] == "done"
    assert_identical(reference, results, run.name)
    assert "ckpt_00000010.pt at step 10" in open(run / "train.log").read(), "resumed from step 10"
    mdir = results / "matrices" / open(results / "matrices" / "LATEST").read().strip()
    rec = json.load(open(run / "slurm.json"))
    assert "DUE TO NODE FAILURE" in open(mdir / "slurm" / f"{rec['job']}.out").read()
    subs = [json.loads(line) for line in open(mdir / "handles.jsonl")]
    assert [h["id"] for h in subs] == [rec["job"]], "requeued by SLURM, not resubmitted"


def two_process_run(tmp_path, monkeypatch, nodes: int, gpus: int, signalled=True, **extra):
    """A 2-process LeNet-5 run through the SLURM executor (nodes x gpus), signalled after
    its first checkpoint (it rests at step 5 until then), requeued and resumed; checked
    against one process within tests/lib/test_ddp.py's tolerance. Returns its folder."""
    from lib.runconfig import config_class
    from scripts.engine import slurm
    from scripts.engine.executor import Job
    monkeypatch.setattr(slurm, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # SGD: Adam's first steps amplify the last-bit differences of a split gradient sum
    settings = dict(optimizer="sgd", lr=0.05, batch_size=32, max_steps=8, log_interval=1,
                    checkpoint_interval=4, monitor_interval=0.0)
    Config = config_class("lenet5")
    one, two = tmp_path / "one", tmp_path / "runs" / "ddp"
    for d in (one, two):
        d.mkdir(parents=True)
        cfg = Config(**settings, out_dir=str(d)).validate()
        (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    ex = slurm.SlurmExecutor({"kind": "slurm", "nodes": nodes, "cpus_per_gpu": 1,
                              "poll_interval": 1, "max_requeues": 1,
                              "setup": "[ ${SLURM_RESTART_COUNT:-0} = 0 ] "
                              "&& export KNLP_SLOW_STEP=5:120" if signalled else "", **extra})
    ex.bind(str(tmp_path / "m"))
    ex.capacity([], 0)
    train = os.path.join(REPO, "lenet5", "train.py")
    [h] = ex.submit_all([Job("ddp", train, [], str(two / "output.log"), gpus=gpus)])
    local = subprocess.run([PY, train, "--config", str(one / "config.json")], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-2000:]
    if signalled:
        wait_for("the first checkpoint", lambda: (two / "checkpoints" / "ckpt_00000004.pt").exists())
        scancel_signal(h["id"])
    wait_for("the task", lambda: not ex.poll(timeout=1.0) and not ex.tracked, timeout=180)
    out = open(two / "output.log").read()
    assert json.load(open(two / "status.json"))["status"] == "done", out[-3000:]
    if signalled:
        assert "resumed from" in out and "at step 5" in out, "preempted at step 5, resumed there"
        assert json.load(open(two / "slurm.json"))["restarts"] == 1
    assert "(= 2 procs x 1 accum x 16)" in open(two / "train.log").read()
    rows = lambda d: [r for r in map(json.loads, open(d / "metrics.jsonl"))  # noqa: E731
                      if r.get("kind") == "train"]
    a, b = rows(one), rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6), ra["step"]
    sa, sb = (json.load(open(d / "summary.json")) for d in (one, two))
    assert sb["eval_loss"] == pytest.approx(sa["eval_loss"], rel=1e-5)
    assert sb["eval_accuracy"] == pytest.approx(sa["eval_accuracy"], abs=1e-9)
    return two


def test_a_two_node_ddp_run_through_srun_matches_one_process(cluster, tmp_path, monkeypatch):
    """CONFIG_SLURM_NODES=2: the batch script's srun starts one rank per node (n1, n2), ranks
    from SLURM_PROCID/LOCALID/NTASKS, MASTER_ADDR the first node's NodeAddr (n1 does not
    resolve), gloo. Signalled after its first checkpoint, srun forwards the signal to both
    ranks, they agree, checkpoint, and the task requeues and resumes; the run matches one
    process within tests/lib/test_ddp.py's tolerance."""
    two = two_process_run(tmp_path, monkeypatch, nodes=2, gpus=0)
    out = open(two / "output.log").read()
    assert out.count("rank 0 of 2 on n1 (master 127.0.0.1:") == 2, out
    assert out.count("rank 1 of 2 on n2") == 2, out


def test_a_two_gpu_run_under_torchrun_is_preempted_and_resumes(cluster, tmp_path, monkeypatch):
    """CONFIG_GPUS=2 on one node (two fake GPUs, the ranks on the CPU): torchrun, which
    ignores the signal, starts its workers in sessions of their own that the forwarded
    signal never reaches; they learn of it from the batch script's preempt.flag,
    checkpoint, and the task requeues and resumes like any other."""
    two = two_process_run(tmp_path, monkeypatch, nodes=1, gpus=2)
    assert "torch.distributed.run --standalone" in open(tmp_path / "m" / "slurm" / "array-0.sh").read()
    assert json.load(open(two / "slurm.json"))["cuda_visible_devices"] == "0,1"


def test_one_torchrun_per_node_over_two_nodes(cluster, tmp_path, monkeypatch):
    """CONFIG_SLURM_TORCHRUN_PER_NODE: srun starts one torchrun per node (n1, n2) with the
    rendezvous at n1's NodeAddr; the 2-process run matches one process. (Preemption of
    torchrun's workers is the 2-GPU test's.)"""
    two = two_process_run(tmp_path, monkeypatch, nodes=2, gpus=0, signalled=False,
                          torchrun_per_node=True)
    out = open(two / "output.log").read()
    assert "node 0 of 2 on n1: torchrun, 1 process(es) (master 127.0.0.1:" in out, out
    assert "node 1 of 2 on n2: torchrun" in out, out
    assert "#SBATCH --ntasks-per-node=1" in open(tmp_path / "m" / "slurm" / "array-0.sh").read()
