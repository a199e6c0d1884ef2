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
