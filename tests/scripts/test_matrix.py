"""The matrix end to end on a tiny LeNet-5 matrix, as `make` drives it: run, up to date,
graphs from disk, archive, baseline deltas, the lock, and SIGKILL + continue equal to an
uninterrupted matrix."""
import csv
import json
import fcntl
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import PY, REPO, run_cmd, write_config
from scripts.engine import report

MATRIX = os.path.join(REPO, "scripts", "engine", "matrix.py")
TINY = """CONFIG_MATRIX_NAME="tiny"
CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE=y
CONFIG_MATRIX_SPARSITY_LEVELS="0.7"
CONFIG_LENET5_EPOCHS=3
CONFIG_CHECKPOINT_INTERVAL=10
# CONFIG_TRACKIO is not set
CONFIG_MONITOR_INTERVAL="0"
"""


def matrix(cmd, config, *extra):
    return run_cmd([PY, MATRIX, cmd, "--config", str(config), *extra])


def rows(results):
    mdir = open(results / "matrices" / "LATEST").read().strip()
    with open(results / "matrices" / mdir / "summary.csv") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}, results / "matrices" / mdir


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted tiny matrix, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("m")
    os.environ["KNLP_RESULTS"] = str(tmp / "results")
    os.environ["KNLP_PROGRESS_INTERVAL"] = "1"        # plain progress lines, once a second
    cfg = write_config(tmp / ".config", TINY)
    p = matrix("run", cfg, "--jobs", "2")
    del os.environ["KNLP_RESULTS"], os.environ["KNLP_PROGRESS_INTERVAL"]
    assert p.returncode == 0, p.stdout + p.stderr
    return tmp, cfg, p


def test_matrix_runs_and_reports(finished):
    tmp, cfg, p = finished
    got, mdir = rows(tmp / "results")
    assert len(got) == 3 and all(r["status"] == "done" for r in got.values())
    state = next(r for r in got.values() if r["pruning_method"] == "state")
    assert abs(float(state["sparsity"]) - 0.7) < 1e-3
    assert all(float(r["primary_value"]) > 80 for r in got.values()), "LeNet-5 learns the digits"
    for f in ("summary.md", "summary.csv", "cells.csv", "config", "plan.json",
              "accuracy_vs_sparsity.png", "layer_sparsity.png", "training_curves.png",
              "throughput_memory.png"):
        assert (mdir / f).exists(), f
    # one seed: the summary says so first, and has a cell table before the run table
    assert p.stdout.count("1 seed: differences below the noise floor") == 1
    md = (mdir / "summary.md").read_text()
    assert md.index("## Cells") < md.index("## Runs") and "1 seed" in md
    header = (mdir / "summary.csv").read_text().splitlines()[0]
    assert "cell_" not in header            # one seed: summary.csv as before seeds existed
    archived = list((tmp / "results" / "archive").glob(f"*-{mdir.name}"))   # <date>-<name>-<hash>
    assert archived and (archived[0] / "summary.md").exists() and (archived[0] / "config").exists()
    assert "skip" not in p.stdout or "adamwprune" in p.stdout
    assert "accuracy" in p.stdout and "results:" in p.stdout
    # JOBS=2: two runs were in flight at once
    spans = sorted((json.load(open(f))["started"], json.load(open(f))["stopped"])
                   for f in (tmp / "results" / "runs").glob("*/status.json"))
    assert spans[1][0] < spans[0][1], "with JOBS=2 the first two runs overlap"


def test_off_a_terminal_progress_is_plain_periodic_lines(finished):
    """stdout is a pipe here (CI, `make | cat`): progress lines, no cursor escapes."""
    _, _, p = finished
    assert "\x1b" not in p.stdout and "\r" not in p.stdout
    assert re.search(r"^  \.\. lenet5_\S+  step \d+/\d+", p.stdout, re.M), p.stdout
    assert re.search(r"^  \.\. matrix: \d/3 done, \d running, \d queued, ETA ", p.stdout, re.M)


def test_second_make_is_up_to_date(finished, monkeypatch):
    tmp, cfg, _ = finished
    monkeypatch.setenv("KNLP_RESULTS", str(tmp / "results"))
    t0 = time.time()
    p = matrix("run", cfg)
    assert p.returncode == 0 and "all 3 runs of matrix tiny are up to date" in p.stdout
    assert time.time() - t0 < 20


def test_update_graphs_redraws_from_disk(finished, monkeypatch):
    tmp, cfg, _ = finished
    monkeypatch.setenv("KNLP_RESULTS", str(tmp / "results"))
    _, mdir = rows(tmp / "results")
    for png in mdir.glob("*.png"):
        png.unlink()
    p = run_cmd([PY, MATRIX, "update-graphs"])
    assert p.returncode == 0, p.stderr
    assert sorted(p.name for p in mdir.glob("*.png")) == sorted(report.GRAPHS)


def test_baseline_adds_deltas(finished, monkeypatch):
    tmp, cfg, _ = finished
    monkeypatch.setenv("KNLP_RESULTS", str(tmp / "results"))
    got, _ = rows(tmp / "results")
    dense = next(r for r in got.values() if r["optimizer"] == "adamw")
    p = matrix("run", cfg, "--baseline", dense["run_id"][:20])
    assert p.returncode == 0
    p = run_cmd([PY, MATRIX, "archive", "--baseline", dense["run_id"]])
    got, _ = rows(tmp / "results")
    assert float(got[dense["run_id"]]["delta"]) == 0.0
    assert all(r["delta"] not in ("", "-") for r in got.values())
    p = matrix("run", cfg, "--baseline", "no_such_run")
    assert p.returncode != 0 and "BASELINE=no_such_run" in p.stderr


def test_second_runner_refuses_while_locked(finished, monkeypatch):
    tmp, cfg, _ = finished
    monkeypatch.setenv("KNLP_RESULTS", str(tmp / "results"))
    with open(tmp / "results" / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = matrix("run", cfg, "--force")
    assert p.returncode != 0 and "another matrix is running" in p.stderr
    got, _ = rows(tmp / "results")
    assert all(r["status"] == "done" for r in got.values()), "the refused runner touched nothing"


def test_sigkill_then_continue_equals_uninterrupted(finished, tmp_path, monkeypatch):
    tmp, _, _ = finished
    monkeypatch.setenv("KNLP_RESULTS", str(tmp_path / "results"))
    cfg = write_config(tmp_path / ".config", TINY)
    proc = subprocess.Popen([PY, MATRIX, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runs = tmp_path / "results" / "runs"
    deadline = time.time() + 120
    while not list(runs.glob("*/checkpoints/ckpt_*.pt")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the child train.py dies with its parent (PR_SET_PDEATHSIG)
    statuses = [open(s).read() for s in runs.glob("*/status.json")]
    assert not any('"done"' in s for s in statuses[1:]) or len(statuses) < 3
    p = run_cmd([PY, MATRIX, "continue"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "resumed from" in "".join(open(f).read() for f in runs.glob("*/train.log"))
    a, _ = rows(tmp / "results")
    b, _ = rows(tmp_path / "results")
    assert a.keys() == b.keys()
    for rid in a:
        for col in ("primary_value", "eval_loss", "sparsity", "steps", "status"):
            assert a[rid][col] == b[rid][col], (rid, col)


def test_continue_plans_every_setting_not_just_the_run_identity(tmp_path):
    """plan.json keeps the settings outside the run id (log and monitor cadence, compile mode,
    ...), so a continued matrix runs as planned, not with their defaults."""
    from scripts.engine import matrix as mx
    from scripts.engine import plan as planner
    cfg = write_config(tmp_path / ".config", TINY + "CONFIG_LOG_INTERVAL=3\n")
    for c in planner.plan(str(cfg)).runs:
        back = mx.record_to_cfg(json.loads(json.dumps(mx.run_record(c))))
        assert back.to_dict() == c.to_dict() and back.run_id() == c.run_id()
        assert (back.log_interval, back.monitor_interval) == (3, 0.0)


def test_seeds_give_cells_with_intervals_and_a_tested_baseline(tmp_path, monkeypatch):
    """SEEDS="1 2 3" through the real runner: each cell has n = 3, a 95% interval, and
    against BASELINE the dense cell's paired difference with its p-value and verdict; the
    summary's first line gives the noise floor."""
    monkeypatch.setenv("KNLP_RESULTS", str(tmp_path / "results"))
    cfg = write_config(tmp_path / ".config", 'CONFIG_MATRIX_NAME="seeds"\n'
                       'CONFIG_MATRIX_PRUNING_MAGNITUDE=y\nCONFIG_MATRIX_SPARSITY_LEVELS="0.9"\n'
                       "CONFIG_LENET5_EPOCHS=2\n# CONFIG_TRACKIO is not set\n"
                       'CONFIG_MONITOR_INTERVAL="0"\n')
    p = matrix("run", cfg, "--seeds", "1 2 3", "--baseline", "lenet5_adamw_none_s0_seed1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    mdir = tmp_path / "results" / "matrices" / open(tmp_path / "results" / "matrices" / "LATEST").read().strip()
    cells = {c["pruning_method"]: c for c in csv.DictReader(open(mdir / "cells.csv"))}
    assert {c["n"] for c in cells.values()} == {"3"}
    for c in cells.values():
        assert float(c["ci95_low"]) <= float(c["mean"]) <= float(c["ci95_high"])
        assert len(c["run_ids"].split()) == 3 and all("_seed" in r for r in c["run_ids"].split())
    mag = cells["magnitude"]
    assert mag["test"] == "paired t (3 seeds)" and mag["verdict"] in ("within noise", "differs")
    assert 0.0 <= float(mag["p_value"]) <= 1.0 and float(mag["diff_low"]) <= float(mag["diff_high"])
    assert cells["none"]["diff"] == ""            # the baseline's own cell
    # every number against a direct computation (numpy, scipy) from the runs' summary.json
    from scipy import stats as st
    acc = {m: {int(r.split("_seed")[1].split("-")[0]): json.load(open(
        tmp_path / "results" / "runs" / r / "summary.json"))["eval_accuracy"]
        for r in c["run_ids"].split()} for m, c in cells.items()}
    for m, c in cells.items():
        x = np.array([acc[m][s] for s in (1, 2, 3)])
        lo, hi = st.t.interval(0.95, 2, loc=x.mean(), scale=st.sem(x))
        for key, want in (("mean", x.mean()), ("std", x.std(ddof=1)), ("ci95_low", lo),
                          ("ci95_high", hi)):
            assert float(c[key]) == pytest.approx(want, abs=1e-9), (m, key)
    d = np.array([acc["magnitude"][s] - acc["none"][s] for s in (1, 2, 3)])
    if d.std() > 0:
        lo, hi = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
        want_p = st.ttest_rel([acc["magnitude"][s] for s in (1, 2, 3)],
                              [acc["none"][s] for s in (1, 2, 3)]).pvalue
        assert float(mag["diff_low"]) == pytest.approx(lo) and float(mag["diff_high"]) == pytest.approx(hi)
        assert float(mag["p_value"]) == pytest.approx(want_p)
        assert mag["verdict"] == ("within noise" if lo <= 0 <= hi else "differs")
    else:                                          # no spread: the interval is the point
        assert float(mag["diff_low"]) == float(mag["diff_high"]) == pytest.approx(d.mean())
    assert float(mag["diff"]) == pytest.approx(d.mean())
    # summary.csv: each run's row carries its cell's figures, as cells.csv has them
    per_run = {r["run_id"]: r for r in csv.DictReader(open(mdir / "summary.csv"))}
    assert len(per_run) == 6
    for c in cells.values():
        for rid in c["run_ids"].split():
            for k in ("n", "mean", "std", "ci95_low", "ci95_high", "diff", "p_value", "verdict"):
                assert per_run[rid][f"cell_{k}"] == c[k], (rid, k)
    floor = np.sqrt(np.var(list(acc["none"].values()), ddof=1))      # one dense cell
    assert f"noise floor (pooled std of the dense cells) {floor:.3g}" in p.stdout
    first = p.stdout[p.stdout.index("3 seeds per cell"):].splitlines()[0]
    assert "noise floor" in first
    # BASELINE= on the finished matrix runs nothing and rewrites the cells against it
    p = matrix("run", cfg, "--seeds", "1 2 3", "--baseline", mag["run_ids"].split()[0])
    assert p.returncode == 0 and "are up to date" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    again = {c["pruning_method"]: c for c in csv.DictReader(open(mdir / "cells.csv"))}
    assert again["magnitude"]["diff"] == "" and again["none"]["test"] == "paired t (3 seeds)"
    assert float(again["none"]["diff"]) == pytest.approx(-float(mag["diff"]))
    assert "within noise" in p.stdout or "differs" in p.stdout
