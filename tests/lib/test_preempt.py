"""lib/preempt.py: the handler only sets a flag; the configured signals; SLURM facts."""
import os
import signal
import subprocess
import sys
import time

from lib import preempt


def test_the_signal_sets_a_flag_and_nothing_else():
    old = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        preempt.reset()
        assert preempt.install(["USR2"]) == ["USR2"]
        assert not preempt.should_stop() and preempt.reason() == ""
        os.kill(os.getpid(), signal.SIGUSR2)
        assert preempt.should_stop() and preempt.agreed()
        assert "SIGUSR2" in preempt.reason()
    finally:
        preempt.reset()
        for s, h in old.items():
            signal.signal(s, h)


def test_configured_signals(monkeypatch):
    monkeypatch.delenv("KNLP_PREEMPT_SIGNALS", raising=False)
    assert preempt.configured() == ["USR1", "USR2"]
    monkeypatch.setenv("KNLP_PREEMPT_SIGNALS", "SIGUSR2,usr1")
    assert preempt.configured() == ["USR2", "USR1"]


def test_a_process_survives_usr1_and_usr2_once_installed(tmp_path):
    code = ("import os, signal, sys; from lib import preempt; preempt.install()\n"
            "os.kill(os.getpid(), signal.SIGUSR1); os.kill(os.getpid(), signal.SIGUSR2)\n"
            "sys.exit(preempt.EXIT_PREEMPTED if preempt.should_stop() else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == preempt.EXIT_PREEMPTED, p.stderr


def test_a_signal_before_the_handler_is_installed_is_not_lost(tmp_path):
    """The SLURM batch script starts the trainer with the signal ignored and, when one comes
    before the trainer's handler is in place, leaves KNLP_PREEMPT_FLAG: install() reads it."""
    flag = tmp_path / "preempt.flag"
    code = ("import os, signal, sys; from lib import preempt\n"
            "os.kill(os.getpid(), signal.SIGUSR2)\n"          # ignored: inherited SIG_IGN
            "assert not preempt.should_stop(); open(os.environ['KNLP_PREEMPT_FLAG'], 'w').close()\n"
            "preempt.install(['USR2']); sys.exit(preempt.EXIT_PREEMPTED if preempt.should_stop() else 0)")
    p = subprocess.run(["bash", "-c", f"trap '' USR2; exec {sys.executable} -c \"$0\"", code],
                       capture_output=True, text=True, env=dict(os.environ, KNLP_PREEMPT_FLAG=str(flag)))
    assert p.returncode == preempt.EXIT_PREEMPTED, p.stderr
    p = subprocess.run([sys.executable, "-c", "from lib import preempt; import sys; "
                        "preempt.install(); sys.exit(1 if preempt.should_stop() else 0)"],
                       capture_output=True, text=True, env=dict(os.environ, KNLP_PREEMPT_FLAG=str(
                           tmp_path / "absent")))
    assert p.returncode == 0, "no flag file, no preemption"


def test_a_flag_left_while_running_is_seen_by_should_stop(tmp_path, monkeypatch):
    """torchrun's workers, in sessions of their own, never get the signal the batch script
    forwards to the launcher; the flag file it leaves reaches them within a second."""
    flag = tmp_path / "preempt.flag"
    monkeypatch.setenv("KNLP_PREEMPT_FLAG", str(flag))
    old = signal.getsignal(signal.SIGUSR2)
    try:
        preempt.reset()
        preempt.install(["USR2"])
        assert not preempt.should_stop()
        flag.touch()
        deadline = time.monotonic() + 3 * preempt.FLAG_EVERY_S
        while not preempt.should_stop():
            assert time.monotonic() < deadline, "should_stop() never looked at the flag"
            time.sleep(0.05)
        assert "SIGUSR2" in preempt.reason()
    finally:
        preempt.reset()
        signal.signal(signal.SIGUSR2, old)


def test_slurm_facts():
    assert preempt.slurm_facts({}) == {}
    got = preempt.slurm_facts({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10",
                               "SLURM_ARRAY_TASK_ID": "2", "SLURMD_NODENAME": "n1"})
    assert got == {"slurm_job_id": "12", "slurm_array_job_id": "10", "slurm_array_task_id": "2",
                   "slurm_node": "n1", "slurm_restart_count": "0"}


def test_preempted_is_an_exception_the_entry_point_maps_to_the_exit_code():
    assert issubclass(preempt.Preempted, Exception) and preempt.EXIT_PREEMPTED == 85
