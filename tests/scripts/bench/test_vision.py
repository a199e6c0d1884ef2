"""scripts/bench/vision.py in its CPU smoke mode: both data paths train through the real
trainer on CIFAR-format files, the bare step runs, and the rows reach the results table."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.bench


def test_vision_bench_smoke(tmp_path):
    table = tmp_path / "bench.csv"
    p = subprocess.run([sys.executable, "-m", "scripts.bench.vision", "--smoke", "--batches", "32",
                        "--steps", "8", "--out", str(tmp_path / "v.json"), "--table", str(table),
                        "--data", str(tmp_path / "data"), "--work", str(tmp_path / "w")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [r["data_path"] for r in doc["rows"]] == ["workers", "gpu"]
    for r in doc["rows"]:
        assert r["trainer_img_s"] > 0 and r["bare_img_s"] > 0
        assert r["ratio"] == pytest.approx(r["trainer_img_s"] / r["bare_img_s"])
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 2 and rows[0]["op"] == "train_vision" and "gpu" in rows[1]["case"]
