"""The matrix statistics against cases computed independently: R's documented output for
Student's sleep data (`t.test(extra ~ group, data = sleep, paired = TRUE)` and the Welch
default), and textbook values of the t quantile."""
import math

import pytest

from scripts.engine import stats

# Cushny & Peebles' sleep data as in R's datasets::sleep: extra hours of sleep, 10 patients
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_mean_and_interval():
    d = stats.describe([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.302653 (any t table): 2 +- 4.302653 / sqrt(3)
    assert d["n"] == 3 and d["mean"] == 2.0 and d["std"] == 1.0
    assert d["ci95_low"] == pytest.approx(2 - 2.484138, abs=1e-6)
    assert d["ci95_high"] == pytest.approx(2 + 2.484138, abs=1e-6)
    one = stats.describe([5.0])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["ci95_low"])


def test_paired_comparison_matches_r():
    """R: t = -4.0621, df = 9, p-value = 0.002833, 95 percent CI -2.4598858 -0.7001142,
    mean difference -1.58."""
    c = stats.compare(dict(enumerate(DRUG1)), dict(enumerate(DRUG2)))
    assert c["test"] == "paired t (10 seeds)"
    assert c["diff"] == pytest.approx(-1.58)
    assert c["diff_low"] == pytest.approx(-2.4598858, abs=1e-6)
    assert c["diff_high"] == pytest.approx(-0.7001142, abs=1e-6)
    assert c["p_value"] == pytest.approx(0.002833, abs=1e-6)
    assert stats.within_noise(c) is False


def test_welch_comparison_matches_r():
    """Unpaired (no seed in common), R's Welch default: t = -1.8608, df = 17.776,
    p-value = 0.07939, 95 percent CI -3.3654832 0.2054832."""
    c = stats.compare(dict(enumerate(DRUG1)), {s + 100: v for s, v in enumerate(DRUG2)})
    assert c["test"].startswith("Welch")
    assert c["diff_low"] == pytest.approx(-3.3654832, abs=1e-6)
    assert c["diff_high"] == pytest.approx(0.2054832, abs=1e-6)
    assert c["p_value"] == pytest.approx(0.07939, abs=1e-5)
    assert stats.within_noise(c) is True


def test_cells_group_seeds_and_compare_with_the_baseline():
    def run(opt, method, sp, seed, acc):
        return {"run_id": f"m_{opt}_{method}_s{sp}_seed{seed}-x", "status": "done", "model": "m",
                "optimizer": opt, "pruning_method": method, "target_sparsity": sp, "seed": seed,
                "primary_value": acc, "sparsity": sp, "primary_metric": "accuracy"}
    rows = [run("adamw", "none", 0.0, s, a) for s, a in zip((1, 2, 3), (98.0, 97.0, 99.0))]
    rows += [run("adamw", "magnitude", 0.7, s, a) for s, a in zip((1, 2, 3), (90.0, 91.0, 89.0))]
    rows += [run("sgd", "none", 0.0, s, a) for s, a in zip((1, 2, 3), (97.0, 99.0, 98.0))]
    rows.append({**run("sgd", "none", 0.0, 4, 0.0), "status": "failed"})
    cells = stats.cells(rows, baseline="m_adamw_none_s0.0_seed1")
    assert [c["n"] for c in cells] == [3, 3, 3], "the failed run is no sample"
    base, mag, sgd = cells
    assert base["mean"] == 98.0 and "diff" not in base
    assert mag["diff"] == pytest.approx(-8.0) and mag["within_noise"] is False
    assert sgd["within_noise"] is True            # differences -1, +2, -1: interval holds 0
    # dense cells' std: 1 and 1: pooled 1
    assert stats.noise_floor(cells) == pytest.approx(1.0)


def test_seeds_needed_matches_published_power_tables():
    """Paired t, two-sided alpha 0.05, power 0.8 (G*Power's 'matched pairs' table): effect
    sizes dz = 0.2, 0.5, 0.8, 1.0 need 199, 34, 15, 10 pairs."""
    assert [stats.seeds_needed(d, 1.0) for d in (0.2, 0.5, 0.8, 1.0)] == [199, 34, 15, 10]


def test_the_power_table_in_the_docs_is_computed():
    import os
    import re
    from conftest import REPO
    text = open(os.path.join(REPO, "docs", "statistics.md")).read()
    rows = re.findall(r"^\| ([\d.]+) \| (\d+) \| (\d+) \|$", text, re.M)
    assert len(rows) >= 5
    for ratio, n80, n90 in rows:
        assert int(n80) == stats.seeds_needed(float(ratio), 1.0)
        assert int(n90) == stats.seeds_needed(float(ratio), 1.0, power=0.9)


# docs/results-lenet5.md's knlp study: (the first column of a table row, matrix A, matrix B)
KNLP_ROWS = [
    ("AdamW dense", "default", "lenet5-knlp"),
    ("AdamW magnitude 70%", "default", "lenet5-knlp"),
    ("knlp without BatchNorm", "lenet5-knlp", "knlp-no-bn"),
    ("knlp with lr 2e-3", "lenet5-knlp", "knlp-lr2e-3"),
    ("knlp with the cosine schedule", "lenet5-knlp", "knlp-cosine"),
    ("knlp at batch 32", "lenet5-knlp", "knlp-batch32"),
    ("knlp with our pruning schedule", "lenet5-knlp", "knlp-our-ramp"),
    ("knlp with the output layer left dense", "lenet5-knlp", "knlp-no-head"),
    ("this project + BatchNorm, against the knlp recipe", "ours-bn", "lenet5-knlp"),
    ("this project + BatchNorm, against this project", "default", "ours-bn"),
    ("this project -> knlp recipe", "ours-30ep", "knlp-30ep"),
    ("this project -> this project + BatchNorm", "ours-30ep", "ours-bn-30ep"),
    ("this project + BatchNorm -> knlp recipe", "ours-bn-30ep", "knlp-30ep"),
]


def test_the_knlp_study_in_the_docs_is_computed_from_its_runs():
    """Every difference, interval and p-value of docs/results-lenet5.md's knlp study,
    recomputed with scipy (paired t over seeds) from the archived per-run table."""
    import csv
    import os
    import numpy as np
    from scipy import stats as st
    from conftest import REPO
    acc = {}
    with open(os.path.join(REPO, "results", "archive", "2026-12-04-lenet5-knlp-study.csv")) as f:
        for r in csv.DictReader(f):
            key = (r["matrix"].rsplit("-", 1)[0], r["pruning"])
            acc.setdefault(key, {})[int(r["seed"])] = float(r["accuracy"])
    doc = open(os.path.join(REPO, "docs", "results-lenet5.md")).read()
    table = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
             for ln in doc.splitlines() if ln.startswith("| ")}
    checked = 0
    for label, a, b in KNLP_ROWS:
        row = next(v for k, v in table.items() if k.startswith(label))
        methods = {"AdamW dense": ["none"], "AdamW magnitude 70%": ["magnitude"]}.get(
            label, ["none", "magnitude"])
        # the first table: A [95%] | B [95%] | B - A [95%] | p; the others a cell per method
        texts = [", ".join(row[-2:])] if len(methods) == 1 else row
        for method, text in zip(methods, texts):
            if text == "(no change)":
                assert (a, method) in acc and (b, method) not in acc, label
                continue
            seeds = sorted(acc[(a, method)])
            x, y = (np.array([acc[(m, method)][s] for s in seeds]) for m in (a, b))
            d = y - x
            assert seeds == [1, 2, 3] and f"{d.mean():+.2f}" in text, (label, method, text)
            if d.std() == 0:
                assert "the same accuracy for each seed" in text, (label, method)
            else:
                lo, hi = st.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=st.sem(d))
                p = st.ttest_rel(y, x).pvalue
                assert f"[{lo:+.2f}, {hi:+.2f}], {p:.2g}" in text, (label, method, text)
            if "->" in label:                     # the 30-epoch table gives A and B too
                assert text.startswith(f"{x.mean():.2f}, {y.mean():.2f}, "), (label, text)
            if len(methods) == 1:                 # and the first, each side's interval
                for side, v in zip(row[:2], (x, y)):
                    lo, hi = st.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=st.sem(v))
                    assert side == f"{v.mean():.2f} [{lo:.2f}, {hi:.2f}]", (label, side)
            checked += 1
    assert checked == 22
