"""scripts/bench/vision.py in its CPU smoke mode: ResNet-18's two data paths on CIFAR-format
files and ResNet-50's two decode paths on a folder of synthetic JPEGs train through the real
trainer (2 steps, tiny images), the bare steps run, and the rows reach the results table
with the fields that make dry-run's estimate (model, batch, data_path, trainer_img_s)."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.bench


def test_vision_bench_smoke(tmp_path):
    table = tmp_path / "bench.csv"
    p = subprocess.run([sys.executable, "-m", "scripts.bench.vision", "--smoke",
                        "--out", str(tmp_path / "v.json"), "--table", str(table),
                        "--data", str(tmp_path / "data"), "--work", str(tmp_path / "w")],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [(r["model"], r["data_path"]) for r in doc["rows"]] == [
        ("resnet18", "workers"), ("resnet18", "gpu"), ("resnet50", "pil"), ("resnet50", "gpu-decode")]
    for r in doc["rows"]:
        assert r["trainer_img_s"] > 0 and r["bare_img_s"] > 0
        assert r["ratio"] == pytest.approx(r["trainer_img_s"] / r["bare_img_s"])
    assert doc["meta"]["jpeg_files"] >= 8 and doc["meta"]["jpeg_mean_kb"] > 0
    check = doc["meta"]["decode_check"]       # on the CPU: the thread path, CPU decode twice
    assert check["ahead_equal"] is True and check["nvjpeg_vs_cpu_max_level"] == 0
    assert check["gpu_decode_path_img_s"] > 0 and check["pil_img_s_one_core"] > 0
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 4 and {r["op"] for r in rows} == {"train_vision"}
    assert [(r["model"], r["batch"], r["data_path"]) for r in rows[2:]] == [
        ("resnet50", "8", "pil"), ("resnet50", "8", "gpu-decode")]
    assert all(float(r["trainer_img_s"]) > 0 and r["device"].startswith("cpu") for r in rows)
