"""make runs / diffconfig / compare on the results of two matrices: the listing, the config
difference, the cell comparison against a direct computation, and one-line refusals that
list close matches."""
import csv
import json
import os

import pytest

from conftest import PY, REPO, run_cmd, write_config
from scripts.engine import stats

MATRIX = os.path.join(REPO, "scripts", "engine", "matrix.py")
QUERY = ["-m", "scripts.engine.query"]
BASE = ('CONFIG_MATRIX_PRUNING_MAGNITUDE=y\nCONFIG_MATRIX_SPARSITY_LEVELS="0.5"\n'
        "CONFIG_LENET5_EPOCHS=1\n# CONFIG_TRACKIO is not set\nCONFIG_MONITOR_INTERVAL=\"0\"\n")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    env = {"KNLP_RESULTS": str(tmp / "results")}
    for name, extra in (("qa", ""), ("qb", 'CONFIG_LENET5_LR="3e-3"\n')):
        cfg = write_config(tmp / f"{name}.config", f'CONFIG_MATRIX_NAME="{name}"\n' + BASE + extra)
        p = run_cmd([PY, MATRIX, "run", "--config", cfg, "--seeds", "1 2"], env_extra=env)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return tmp, env


def q(env, *args):
    return run_cmd([PY, *QUERY, *args], env_extra=env)


def test_runs_lists_every_run_and_one_matrix(two):
    tmp, env = two
    p = q(env, "runs")
    assert p.returncode == 0 and p.stdout.count("lenet5_adamw_") == 8
    one = q(env, "runs", "--matrix", "qa")
    assert one.stdout.count("lenet5_adamw_") == 4 and "accuracy" in one.stdout


def test_runs_filter_by_field_and_write_csv(two):
    tmp, env = two
    p = q(env, "runs", "--filter", "pruning=magnitude sparsity=0.5 seed=2", "--format", "csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(p.stdout.splitlines()))
    assert len(rows) == 2, p.stdout          # one magnitude seed-2 run in each matrix
    for r in rows:
        assert (r["pruning"], r["sparsity"], r["seed"], r["status"]) == ("magnitude", "0.5", "2", "done")
        summ = json.load(open(tmp / "results" / "runs" / r["id"] / "summary.json"))
        assert float(r["value"]) == pytest.approx(summ["eval_accuracy"])
        assert float(r["achieved"]) == pytest.approx(summ["sparsity"]) and r["date"]
    table = q(env, "runs", "--filter", "optimizer=sgd")
    assert table.returncode == 0 and "no run matches" in table.stdout
    bad = q(env, "runs", "--filter", "prunning=state")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "did you mean pruning?" in bad.stderr
    make = run_cmd(["make", "--no-print-directory", "-n", "runs", "FILTER=seed=2", "FORMAT=csv"])
    assert 'query runs' in make.stdout and '--filter "seed=2" --format csv' in make.stdout


def test_diffconfig_of_two_matrices_is_linux_style(two):
    tmp, env = two
    p = q(env, "diffconfig", "--a", "qa", "--b", "qb")
    assert p.returncode == 0, p.stderr
    head, body = p.stdout.splitlines()[:2], p.stdout.splitlines()[2:]
    assert head[0].startswith("A qa-") and head[1].startswith("B qb-")
    assert body == [' LENET5_LR "2e-3" -> "3e-3"', ' MATRIX_NAME "qa" -> "qb"'], p.stdout


def test_diffconfig_names_the_fields_that_differ(two):
    tmp, env = two
    runs = sorted(os.listdir(tmp / "results" / "runs"))
    dense = [r for r in runs if "_none_" in r and "_seed1-" in r]
    p = q(env, "diffconfig", "--a", dense[0], "--b", dense[1])
    assert p.returncode == 0
    changed = [ln.split()[0] for ln in p.stdout.splitlines()[2:]]
    assert changed == ["lr", "trackio_project"], p.stdout


def test_compare_two_matrices_cell_by_cell(two):
    tmp, env = two
    p = q(env, "compare", "--a", "qa", "--b", "qb")
    assert p.returncode == 0 and "2 common cells" in p.stdout, p.stdout + p.stderr
    # check one cell against a direct computation from the per-run summaries
    mats = tmp / "results" / "matrices"
    vals = {}
    for d in os.listdir(mats):
        if (mats / d / "summary.csv").exists():
            for r in csv.DictReader(open(mats / d / "summary.csv")):
                if r["pruning_method"] == "none":
                    vals.setdefault(d.split("-")[0], {})[r["run_id"].split("_seed")[1][0]] = float(r["primary_value"])
    want = stats.compare({int(k): v for k, v in vals["qb"].items()},
                         {int(k): v for k, v in vals["qa"].items()})
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("lenet5 adamw none"))
    assert f"{want['diff']:+.2f}" in line and "paired t (2 seeds)" in line
    a = stats.describe(list(vals["qa"].values()))
    assert f"{a['mean']:.2f} [{a['ci95_low']:.2f}, {a['ci95_high']:.2f}] n=2" in line
    assert "0.0000/0.0000" in line                  # dense on both sides: no sparsity
    mag = next(ln for ln in p.stdout.splitlines() if ln.startswith("lenet5 adamw magnitude"))
    assert "0.5000/0.5000" in mag
    curves = p.stdout.split("curves: ", 1)[1].strip()
    assert os.path.getsize(os.path.join(REPO, curves)) > 10_000 and curves.endswith(".png")
    assert os.path.basename(curves).startswith("qa-") and "_vs_qb-" in curves


def test_unknown_names_are_one_line_with_close_matches(two):
    tmp, env = two
    p = q(env, "diffconfig", "--a", "lenet5_adamw_nonee", "--b", "x")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "matches nothing; close: lenet5_adamw_none" in p.stderr
    p = q(env, "compare", "--a", "qz", "--b", "qa")
    assert p.returncode == 2 and "matrix 'qz' matches nothing; close: q" in p.stderr
    make = run_cmd(["make", "--no-print-directory", "-n", "compare", "A=qa", "B=qb"])
    assert "scripts.engine.query compare --a \"qa\" --b \"qb\"" in make.stdout


@pytest.mark.parametrize("target", ["runs", "diffconfig", "compare", "power-table", "infer",
                                    "export", "dashboard", "autotune", "bench-kernels"])
def test_seeds_are_refused_where_they_would_be_ignored(target):
    p = run_cmd(["make", "--no-print-directory", "-n", target, "A=x", "B=y", "MATRIX=z", "RUN=r",
                 "SEEDS=1 2"])
    assert p.returncode != 0
    assert f"SEEDS=/SEED= does nothing for `make {target}`; drop it" in p.stderr
