"""AdamWPrune's claim on real data: LeNet-5 on the shipped digits, AdamW + state pruning
at 70 percent sparsity loses at most 1.5 points of test accuracy against dense AdamW with
the same (default) budget. The full table is in docs/results-lenet5.md."""
import json
import os

from conftest import PY, REPO, run_cmd

TRAIN = os.path.join(REPO, "lenet5", "train.py")


def final(out, *args):
    run_cmd([PY, TRAIN, "--out-dir", str(out), "--monitor-interval", "0", *args], check=True)
    return json.load(open(os.path.join(out, "summary.json")))


def test_state_pruning_at_70_percent_keeps_accuracy(tmp_path):
    dense = final(tmp_path / "dense", "--optimizer", "adamw")
    pruned = final(tmp_path / "state", "--optimizer", "adamwprune", "--adamwprune-base", "adamw",
                   "--pruning-method", "state", "--target-sparsity", "0.7")
    assert abs(pruned["sparsity"] - 0.7) <= 1e-3
    assert dense["eval_accuracy"] > 95.0, "dense LeNet-5 must learn the digits"
    assert pruned["eval_accuracy"] >= dense["eval_accuracy"] - 1.5, (dense["eval_accuracy"],
                                                                     pruned["eval_accuracy"])
