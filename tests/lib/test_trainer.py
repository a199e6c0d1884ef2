"""The shared trainer through LeNet-5's train.py, as a user runs it: exact resume after
SIGKILL, TIME budget, NaN detection, and one clear line for each kind of bad input."""
import json
import os
import signal
import subprocess
import time

import torch

from conftest import PY, REPO, run_cmd

TRAIN = os.path.join(REPO, "lenet5", "train.py")
FAST = ["--monitor-interval", "0", "--log-interval", "5"]


def train(out, *args, **kw):
    return run_cmd([PY, TRAIN, "--out-dir", str(out), *FAST, *args], **kw)


def summary(out):
    return json.load(open(os.path.join(out, "summary.json")))


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    args = ["--optimizer", "adamwprune", "--pruning-method", "state", "--target-sparsity", "0.7",
            "--max-steps", "200", "--checkpoint-interval", "25"]
    a, b = tmp_path / "a", tmp_path / "b"
    train(a, *args, check=True)
    proc = subprocess.Popen([PY, TRAIN, "--out-dir", str(b), *FAST, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckdir = b / "checkpoints"
    deadline = time.time() + 120
    while not (ckdir.exists() and any(p.suffix == ".pt" for p in ckdir.iterdir())):
        assert time.time() < deadline and proc.poll() is None, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = json.load(open(b / "status.json"))
    assert st["status"] == "running", "the kill must land mid-run for this test to mean anything"
    resumed = train(b, *args, check=True)
    assert "resumed from" in resumed.stdout
    sa, sb = summary(a), summary(b)
    for k in ("eval_accuracy", "eval_loss", "sparsity", "train_loss", "steps"):
        assert sa[k] == sb[k], k
    wa = torch.load(a / "checkpoints" / "model.pt")
    wb = torch.load(b / "checkpoints" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # metric rows after the checkpoint were dropped and redone: no duplicate steps
    steps = [json.loads(line)["step"] for line in open(b / "metrics.jsonl")
             if json.loads(line).get("kind") == "train"]
    assert steps == sorted(set(steps))


def test_time_budget_stops_cleanly_and_hits_the_target(tmp_path):
    p = train(tmp_path / "r", "--optimizer", "adamw", "--pruning-method", "magnitude",
              "--target-sparsity", "0.5", "--epochs", "1000", "--time-budget", "2", check=True)
    s = summary(tmp_path / "r")
    assert "time budget" in s["stop_reason"]
    assert s["steps"] < 1000 * 44
    assert abs(s["sparsity"] - 0.5) < 1e-3, "finalize() must reach the target when time runs out"
    assert json.load(open(tmp_path / "r" / "status.json"))["status"] == "done"


def test_nan_loss_fails_the_run_and_keeps_the_checkpoint(tmp_path):
    p = train(tmp_path / "r", "--optimizer", "sgd", "--lr", "1e12", "--max-steps", "80",
              "--checkpoint-interval", "1", "--weight-decay", "0")
    assert p.returncode != 0
    st = json.load(open(tmp_path / "r" / "status.json"))
    assert st["status"] == "failed" and "loss is" in st["reason"] and "step" in st["reason"]
    assert list((tmp_path / "r" / "checkpoints").glob("ckpt_*.pt")), "last good checkpoint kept"


def test_unknown_optimizer_is_one_clear_line(tmp_path):
    p = train(tmp_path / "r", "--optimizer", "adamx")
    assert p.returncode != 0
    assert p.stderr.strip().count("\n") == 0
    assert "unknown optimizer" in p.stderr and "adamwprune" in p.stderr
    assert not (tmp_path / "r").exists(), "bad input must not create results"


def test_sparsity_outside_range_and_state_without_adam(tmp_path):
    p = train(tmp_path / "r", "--pruning-method", "magnitude", "--target-sparsity", "1.5")
    assert p.returncode != 0 and "target_sparsity" in p.stderr and "[0, 1)" in p.stderr
    p = train(tmp_path / "r", "--optimizer", "sgd", "--pruning-method", "state",
              "--target-sparsity", "0.5")
    assert p.returncode != 0 and "adamwprune" in p.stderr


def test_unknown_flag_suggests(tmp_path):
    p = train(tmp_path / "r", "--target-sparsty", "0.5")
    assert p.returncode != 0 and "did you mean --target-sparsity" in p.stderr


def test_corrupt_checkpoint_is_named_and_left_alone(tmp_path):
    ck = tmp_path / "r" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "ckpt_00000010.pt").write_bytes(b"not a checkpoint")
    p = train(tmp_path / "r", "--max-steps", "20")
    assert p.returncode != 0
    assert "ckpt_00000010.pt is corrupt" in p.stderr and "FORCE=1" in p.stderr
    assert (ck / "ckpt_00000010.pt").read_bytes() == b"not a checkpoint"


def test_runs_from_inside_the_model_folder(tmp_path):
    p = run_cmd([PY, "train.py", "--optimizer", "adamwprune", "--pruning-method", "state",
                 "--target-sparsity", "0.7", "--max-steps", "30", "--out-dir", str(tmp_path / "r"),
                 *FAST], cwd=os.path.join(REPO, "lenet5"), check=True)
    s = summary(tmp_path / "r")
    assert abs(s["sparsity"] - 0.7) < 1e-3
    for f in ("config.json", "status.json", "metrics.jsonl", "summary.json", "train.log"):
        assert (tmp_path / "r" / f).exists(), f


def test_trackio_and_monitor_record_the_run(tmp_path):
    import sqlite3
    out, tk = tmp_path / "r", tmp_path / "trackio"
    run_cmd([PY, TRAIN, "--out-dir", str(out), "--max-steps", "150", "--log-interval", "10",
             "--trackio", "--trackio-dir", str(tk), "--trackio-project", "proj",
             "--monitor-interval", "0.1"], check=True)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    system = [r for r in rows if r["kind"] == "system"]
    assert system and all(r["rss_mb"] > 0 for r in system)
    db = sqlite3.connect(tk / "proj.db")
    logged = [json.loads(m) for (m,) in db.execute("select metrics from metrics")]
    assert any("train/loss" in m for m in logged) and any("eval/accuracy" in m for m in logged)
    assert db.execute("select count(*) from system_metrics").fetchone()[0] > 0


def test_kernel_linear_trains_like_the_torch_reference(tmp_path):
    """CONFIG_KERNEL_LINEAR routes every nn.Linear through kernels.linear (cpu backend here):
    the run must train as the torch reference does, block-sparse pruning included."""
    args = ["--optimizer", "adamwprune", "--pruning-method", "state", "--target-sparsity", "0.5",
            "--pruning-block-size", "4", "--max-steps", "40"]
    ref = tmp_path / "ref"
    train(ref, *args, check=True)
    ker = tmp_path / "ker"
    p = train(ker, *args, "--kernel-linear", "--kernel-backend", "cpu", check=True)
    a, b = summary(ref), summary(ker)
    assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-3 * max(1.0, a["eval_loss"])
    assert abs(b["sparsity"] - 0.5) < 0.02


BUDGETED = ["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5",
            "--epochs", "1000", "--eval-interval", "100000"]


def test_a_budgeted_run_prunes_gradually_in_fractions_of_its_budget(tmp_path):
    """The schedule runs in fractions of the budget (docs/pruning.md): the masks rise over
    several updates before the stop and reach the target by pruning_ramp_end of it, instead
    of one jump in finalize()."""
    out = tmp_path / "r"
    train(out, *BUDGETED, "--time-budget", "10", "--pruning-frequency", "1",
          "--log-interval", "1", check=True)
    s = summary(out)
    assert "time budget" in s["stop_reason"] and s["steps"] < 44000 // 4, "stopped by the budget"
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    levels = [r["sparsity"] for r in rows if r["kind"] == "train"]
    assert levels == sorted(levels), "masks only grow"
    assert len({x for x in levels if x > 0}) >= 3, f"one jump, not a ramp: {sorted(set(levels))}"
    assert levels[-1] == 0.5, "the target is reached before the stop (ramp end 0.7 of it)"
    assert abs(s["sparsity"] - 0.5) < 1e-3


def test_the_budget_counts_training_time_only(tmp_path):
    """A slow first step (a torch.compile, here KNLP_SLOW_STEP's sleep) is warm-up and
    evaluations are eval time: neither spends the budget; summary.json has all three."""
    out = tmp_path / "r"
    train(out, *BUDGETED, "--time-budget", "3", "--eval-interval", "10",
          env_extra={"KNLP_SLOW_STEP": "1:6"}, check=True)
    s = summary(out)
    assert "time budget" in s["stop_reason"]
    assert s["steps"] > 5, "the warm-up must not spend the budget"
    assert s["warmup_s"] >= 6, "the slow first step is warm-up"
    assert 3 <= s["train_s"] < 6
    assert s["evaluation_s"] > 0
    assert s["wall_time_s"] >= s["warmup_s"] + s["train_s"] + s["evaluation_s"] - 1e-6


def test_status_json_is_live_while_the_run_trains(tmp_path):
    """status.json is rewritten at every log step (what `make status` shows): read from
    another process mid-run it has the step, rate, eta and the last evaluation."""
    out = tmp_path / "r"
    env = dict(os.environ, PYTHONUNBUFFERED="1", KNLP_SLOW_STEP="33:4")
    proc = subprocess.Popen([PY, TRAIN, "--out-dir", str(out), *FAST, "--max-steps", "60",
                             "--eval-interval", "10"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen, deadline = [], time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        try:
            st = json.load(open(out / "status.json"))
        except (OSError, ValueError):
            st = {}
        if st.get("status") == "running" and st.get("step", 0) > 0:
            seen.append(st)
        time.sleep(0.05)
    assert proc.wait(timeout=240) == 0
    mid = [st for st in seen if 0 < st["step"] < st["total_steps"] == 60]
    assert mid, "status.json never showed a step mid-run"
    st = mid[-1]
    assert st["unit"] == "samples" and st["rate"] > 0 and st["elapsed_s"] > 0
    assert st["eta_s"] > 0 and isinstance(st["loss"], float)
    assert st["last_eval"]["metric"] == "accuracy" and st["last_eval"]["step"] % 10 == 0
    assert "environment" in st and st["started"]
    end = json.load(open(out / "status.json"))
    assert end["status"] == "done" and end["step"] == 60 and end["started"] == st["started"]


def test_mid_run_evaluations_are_printed(tmp_path):
    p = train(tmp_path / "r", "--max-steps", "12", "--eval-interval", "5", "--eval-batches", "2",
              check=True)
    lines = [ln for ln in p.stdout.splitlines() if "eval step" in ln]
    assert len(lines) == 2 and "eval step 5: loss " in lines[0] and " accuracy " in lines[0]
    assert "eval step 10: loss " in open(tmp_path / "r" / "train.log").read()


def test_a_preemption_signal_checkpoints_and_the_resumed_run_is_identical(tmp_path):
    """SIGUSR2 (a scheduler's warning, lib/preempt.py) mid-run: the run writes a checkpoint
    at the next step, says `preempted`, exits with EXIT_PREEMPTED; restarted, it ends bit
    for bit where an uninterrupted run ends. Before, the signal killed it with no status."""
    from lib import preempt
    args = ["--max-steps", "60", "--checkpoint-interval", "1000", "--pruning-method", "magnitude",
            "--target-sparsity", "0.5"]
    a, b = tmp_path / "a", tmp_path / "b"
    train(a, *args, check=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", KNLP_SLOW_STEP="23:3")
    proc = subprocess.Popen([PY, TRAIN, "--out-dir", str(b), *FAST, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:       # wait for the slow step 23: the run is mid-way
        try:
            st = json.load(open(b / "status.json"))
        except (OSError, ValueError):
            st = {}
        if st.get("step", 0) >= 20:
            break
        assert proc.poll() is None and time.time() < deadline, "the run never reached step 20"
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=120) == preempt.EXIT_PREEMPTED
    st = json.load(open(b / "status.json"))
    assert st["status"] == "preempted" and "SIGUSR2" in st["reason"] and 20 <= st["step"] < 60
    assert list((b / "checkpoints").glob("ckpt_*.pt")), "preemption writes a checkpoint"
    resumed = train(b, *args, check=True)
    assert "resumed from" in resumed.stdout
    sa, sb = summary(a), summary(b)
    keys = [k for k in sa if k.startswith("eval_")] + ["train_loss", "steps", "sparsity"]
    assert {k: sa[k] for k in keys} == {k: sb[k] for k in keys}


def test_the_kernel_switches_in_effect_are_recorded(tmp_path):
    """CONFIG_KERNELS_* reach the environment kernels/ reads, and status.json records the
    effective values; an explicit environment variable wins over the config."""
    out = tmp_path / "r"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELS_")}
    env["KERNELS_PERSISTENT"] = "off"     # (earlier tests of this process may set others)
    p = subprocess.run([PY, TRAIN, "--out-dir", str(out), *FAST, "--max-steps", "2",
                        "--kernels-autotune", "0", "--no-kernels-tma"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    sw = json.load(open(out / "status.json"))["environment"]["kernel_switches"]
    assert sw["KERNELS_AUTOTUNE"] == "0" and sw["KERNELS_TMA"] == "0"
    assert sw["KERNELS_PERSISTENT"] == "off", "the environment's own setting wins"
