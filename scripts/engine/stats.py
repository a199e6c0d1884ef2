"""Statistics of a matrix over its seeds: per cell mean and 95 percent interval, the difference
to a baseline cell with its interval and p-value, and the matrix's noise floor.

A cell is model x optimizer x pruning method x target sparsity; its runs differ only in the
seed. The interval of a mean is Student's t: mean +- t(0.975, n-1) s / sqrt(n). Against a
baseline cell the design decides the test: runs with the same seed share initialisation and
data order, so where the two cells have at least two seeds in common the comparison is
paired (the t-test of the per-seed differences, scipy.stats.ttest_rel); otherwise Welch's
unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False) with the
Welch-Satterthwaite degrees of freedom. A difference whose 95 percent interval holds 0 is
"within noise". The noise floor is the pooled standard deviation of the dense cells
(sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))): differences well below it are not visible.
docs/statistics.md explains how to read them.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

NAN = float("nan")


def cell_key(row: dict) -> tuple:
    return (row.get("model"), row.get("optimizer"), row.get("pruning_method"),
            float(row.get("target_sparsity") or 0.0))


def describe(values) -> dict:
    """n, mean, std (n-1) and the 95 percent t interval of the mean; NaN where n < 2."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else NAN, "std": NAN,
           "ci95_low": NAN, "ci95_high": NAN}
    if n >= 2:
        sd = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(std=sd, ci95_low=out["mean"] - half, ci95_high=out["mean"] + half)
    return out


def compare(values: dict, base: dict) -> dict:
    """values, base: {seed: metric}. The difference of means (values - base), its 95 percent
    interval, the p-value and the test used; NaN and test "none" where there is too little
    to test (fewer than two runs on a side)."""
    common = sorted(set(values) & set(base))
    a = np.asarray(list(values.values()), dtype=float)
    b = np.asarray(list(base.values()), dtype=float)
    out = {"diff": float(a.mean() - b.mean()) if len(a) and len(b) else NAN,
           "diff_low": NAN, "diff_high": NAN, "p_value": NAN, "test": "none"}
    if len(common) >= 2:
        d = np.asarray([values[s] - base[s] for s in common], dtype=float)
        n, sd = len(d), float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        p = (float(stats.ttest_rel([values[s] for s in common], [base[s] for s in common]).pvalue)
             if sd > 0 else float(d.mean() == 0))    # no spread: the difference is exact
        out.update(diff=float(d.mean()), diff_low=float(d.mean()) - half,
                   diff_high=float(d.mean()) + half, p_value=p,
                   test=f"paired t ({n} seeds)")
    elif len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se else 1.0
        half = float(stats.t.ppf(0.975, df)) * se
        p = (float(stats.ttest_ind(a, b, equal_var=False).pvalue) if se > 0
             else float(out["diff"] == 0))
        out.update(diff_low=out["diff"] - half, diff_high=out["diff"] + half, p_value=p,
                   test=f"Welch t ({len(a)} vs {len(b)} runs)")
    return out


def within_noise(cmp: dict):
    """True when the interval holds 0, False when it excludes it, None when untested."""
    if math.isnan(cmp["diff_low"]):
        return None
    return cmp["diff_low"] <= 0.0 <= cmp["diff_high"]


def noise_floor(cells: list) -> float:
    """The pooled standard deviation of the dense cells (NaN without one of n >= 2)."""
    dense = [c for c in cells if c["pruning_method"] == "none" and c["n"] >= 2]
    dof = sum(c["n"] - 1 for c in dense)
    if not dof:
        return NAN
    return math.sqrt(sum((c["n"] - 1) * c["std"] ** 2 for c in dense) / dof)


def cells(rows: list, metric: str = "primary_value", baseline: str | None = None) -> list:
    """One dict per cell of finished runs (first-seen order): the cell's fields, n, mean, std,
    ci95_low/high of `metric`, the mean achieved sparsity, the seeds and run ids, and, when
    `baseline` (a run id prefix) names a run, the comparison with that run's cell."""
    groups = {}
    for r in rows:
        if r.get("status") != "done" or r.get(metric) is None:
            continue
        groups.setdefault(cell_key(r), []).append(r)
    base_key = None
    if baseline:
        hit = [r for r in rows if str(r.get("run_id", "")).startswith(baseline)]
        base_key = cell_key(hit[0]) if hit else None
    out = []
    for key, runs in groups.items():
        c = dict(zip(("model", "optimizer", "pruning_method", "target_sparsity"), key))
        c.update(describe([r[metric] for r in runs]))
        c["sparsity"] = float(np.mean([r.get("sparsity") or 0.0 for r in runs]))
        c["seeds"] = [r.get("seed", 1) for r in runs]
        c["run_ids"] = [r["run_id"] for r in runs]
        c["primary_metric"] = runs[0].get("primary_metric", "")
        if base_key and key != base_key and base_key in groups:
            by_seed = {r.get("seed", i): r[metric] for i, r in enumerate(runs)}
            base = {r.get("seed", i): r[metric] for i, r in enumerate(groups[base_key])}
            c.update(compare(by_seed, base))
            c["within_noise"] = within_noise(c)
        out.append(c)
    return out


def seeds_needed(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05,
                 max_n: int = 200) -> int:
    """Seeds per cell for a paired t-test (two-sided, level alpha) to detect a true difference
    `effect` with probability `power`, where the per-seed differences have standard deviation
    `sd`: the smallest n with P(|T| > t(1 - alpha/2, n-1)) >= power, T noncentral t with
    n - 1 degrees of freedom and noncentrality effect / sd * sqrt(n)."""
    for n in range(2, max_n + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = effect / sd * math.sqrt(n)
        if stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= power:
            return n
    return max_n
