"""docs/statistics.md's measured noise floor and power table: recomputed from the archived
3-seed default matrix it was written from, and the two pooled deviations checked against a
direct numpy computation on a small hand-made matrix."""
import csv
import glob
import os

import numpy as np
import pytest

from conftest import REPO
from lib.runconfig import ConfigError
from scripts.engine import power_table, stats


def write_matrix(folder, runs):
    """cells.csv and summary.csv as report.write_summary writes them, for runs
    (optimizer, method, sparsity, seed, accuracy)."""
    os.makedirs(folder, exist_ok=True)
    cells = {}
    with open(os.path.join(folder, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["run_id", "status", "primary_value"])
        w.writeheader()
        for opt, method, sp, seed, acc in runs:
            rid = f"m_{opt}_{method}_s{sp}_seed{seed}-x"
            w.writerow({"run_id": rid, "status": "done", "primary_value": acc})
            cells.setdefault((opt, method, sp), []).append((seed, rid))
    with open(os.path.join(folder, "cells.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "optimizer", "pruning_method",
                                          "target_sparsity", "primary_metric", "seeds", "run_ids"])
        w.writeheader()
        for (opt, method, sp), members in cells.items():
            w.writerow({"model": "m", "optimizer": opt, "pruning_method": method,
                        "target_sparsity": sp, "primary_metric": "accuracy",
                        "seeds": " ".join(str(s) for s, _ in members),
                        "run_ids": " ".join(r for _, r in members)})


def test_noise_floor_and_paired_sd_are_the_pooled_deviations(tmp_path):
    dense_a, dense_b = [98.0, 97.0, 99.5], [96.0, 97.5, 97.0]
    pruned_a, pruned_b = [97.0, 96.5, 98.0], [95.0, 97.0, 95.5]
    runs = [("a", "none", 0.0, s, v) for s, v in zip((1, 2, 3), dense_a)]
    runs += [("a", "magnitude", 0.7, s, v) for s, v in zip((1, 2, 3), pruned_a)]
    runs += [("b", "none", 0.0, s, v) for s, v in zip((1, 2, 3), dense_b)]
    runs += [("b", "movement", 0.7, s, v) for s, v in zip((1, 2, 3), pruned_b)]
    write_matrix(tmp_path / "m", runs)
    m = power_table.measure(power_table.read_cells(str(tmp_path / "m")))
    var = lambda x: np.var(x, ddof=1)  # noqa: E731
    assert m["noise_floor"] == pytest.approx(np.sqrt((var(dense_a) + var(dense_b)) / 2))
    da, db = np.subtract(pruned_a, dense_a), np.subtract(pruned_b, dense_b)
    assert m["s_d"] == pytest.approx(np.sqrt((var(da) + var(db)) / 2))
    assert (m["floor_dof"], m["s_d_dof"], m["seeds"]) == (4, 4, [1, 2, 3])
    rows = power_table.table(m, effects=(1.0, 2.0))[2:]
    assert rows[0] == (f"| 1 | {1 / m['s_d']:.2f} | {stats.seeds_needed(1.0, m['s_d'])} | "
                       f"{stats.seeds_needed(1.0, m['s_d'], power=0.9)} |")
    # one seed per cell: no table, and the message says what to run
    write_matrix(tmp_path / "one", [r for r in runs if r[3] == 1])
    with pytest.raises(ConfigError, match='SEEDS="1 2 3"'):
        power_table.render(str(tmp_path / "one"), f"{power_table.BEGIN}\n{power_table.END}\n")


def test_render_replaces_only_the_block(tmp_path):
    folder = tmp_path / "m"
    write_matrix(folder, [(o, p, sp, s, 90.0 + s * (1 + k) + sp)
                          for k, (o, p, sp) in enumerate([("a", "none", 0.0), ("a", "state", 0.5)])
                          for s in (1, 2, 3)])
    text = f"intro\n\n{power_table.BEGIN}\nold\n{power_table.END}\n\ntail\n"
    new = power_table.render(str(folder), text, runs_dir=str(tmp_path / "no-runs"))
    assert new.startswith("intro\n\n" + power_table.BEGIN) and new.endswith(power_table.END + "\n\ntail\n")
    assert "old" not in new and "provenance unknown" in new
    assert power_table.render(str(folder), new, runs_dir=str(tmp_path / "no-runs")) == new
    with pytest.raises(ConfigError, match="no block"):
        power_table.render(str(folder), "no markers\n")


def test_the_docs_block_is_what_the_archived_default_matrix_gives():
    """The figures in docs/statistics.md come from the archived 3-seed default matrix they
    name; recomputing them (without results/runs, so the provenance is the document's own)
    gives the document back."""
    doc = open(power_table.DOC).read()
    block = power_table.current_block(doc)
    name = block.split("Measured: `", 1)[1].split("`", 1)[0]
    folder = os.path.join(REPO, name)
    assert folder in glob.glob(os.path.join(REPO, "results", "archive", "*-default-*")), name
    assert power_table.render(folder, doc, runs_dir=os.path.join(folder, "no-runs")) == doc
    # and the noise floor is the one the matrix's summary printed (stats.noise_floor on its cells)
    with open(os.path.join(folder, "summary.md")) as f:
        head = f.read()
    printed = float(head.split("noise floor (pooled std of the dense cells) ", 1)[1].split()[0])
    assert f"noise floor: {printed:.2f} accuracy points" in block
