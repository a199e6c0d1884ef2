"""The local executor: parallel slots, one GPU set per job, environment passed on whole,
torchrun for multi-GPU jobs, children that die with the runner."""
import os
import time

from conftest import REPO
from scripts.engine.executor import Job, LocalExecutor

PRINT_ENV = """import os, time, sys
print(os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("NCCL_NVLS_ENABLE"), time.time())
time.sleep(float(sys.argv[1]))
print(time.time())
"""


def test_jobs_run_in_parallel_pinned_to_their_own_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "0")
    script = tmp_path / "job.py"
    script.write_text(PRINT_ENV)
    ex = LocalExecutor(jobs=2, gpu_ids=[0, 1])
    jobs = [Job(f"j{i}", str(script), ["1.0"], str(tmp_path / f"j{i}.log"), gpus=1) for i in range(2)]
    t0 = time.time()
    for j in jobs:
        ex.submit(j)
    assert ex.free_slots() == 0 and ex.free_gpus == []
    done = []
    while ex.running:
        done += ex.wait_any()
    assert sorted(rc for _, rc in done) == [0, 0]
    assert time.time() - t0 < 1.9, "two 1 s jobs with JOBS=2 must overlap"
    lines = [open(tmp_path / f"j{i}.log").read().split() for i in range(2)]
    assert sorted(l[0] for l in lines) == ["0", "1"], "each job gets its own GPU"
    assert all(l[1] == "0" for l in lines), "NCCL settings reach the run unchanged"
    assert ex.free_gpus == [0, 1]


def test_multi_gpu_jobs_use_torchrun():
    ex = LocalExecutor(jobs=1, gpu_ids=[0, 1])
    cmd = ex.command(Job("j", "gpt2/train.py", ["--config", "c.json"], "/dev/null", gpus=2))
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=2" in cmd and cmd[-3:] == ["gpt2/train.py", "--config", "c.json"]
    assert ex.command(Job("j", "t.py", [], "/dev/null", gpus=1))[1:] == ["t.py"]


def test_a_job_dies_with_its_runner(tmp_path):
    """PR_SET_PDEATHSIG: kill the runner, the job goes too (no orphan writing results)."""
    import signal
    import subprocess
    import sys
    runner = tmp_path / "runner.py"
    runner.write_text(f"""import sys, time
from scripts.engine.executor import Job, LocalExecutor
ex = LocalExecutor(1)
ex.submit(Job("j", {str(tmp_path / 'sleep.py')!r}, [], {str(tmp_path / 'j.log')!r}))
print(next(iter(ex.running)).pid, flush=True)
time.sleep(60)
""")
    (tmp_path / "sleep.py").write_text("import time; time.sleep(60)")
    p = subprocess.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    p.send_signal(signal.SIGKILL)
    p.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the job outlived its runner")


def test_wait_any_returns_empty_after_its_timeout(tmp_path):
    """The runner redraws progress once a second while its runs go on."""
    script = tmp_path / "job.py"
    script.write_text(PRINT_ENV)
    ex = LocalExecutor(jobs=1)
    ex.submit(Job("j", str(script), ["3.0"], str(tmp_path / "j.log")))
    t0 = time.time()
    assert ex.wait_any(timeout=0.5) == [] and time.time() - t0 < 2.5
    ex.stop_all()
