"""scripts/bench/gpu_multi.sh (the several-GPU measurements, run on a multi-GPU device) in its CPU
smoke mode: every phase goes through the matrix runner, the kill phase SIGKILLs the training
process after step 6, the run is marked failed at once, `continue` resumes it from its
checkpoint to the uninterrupted run's final loss, and the report has every section."""
import json
import os
import subprocess
import sys

from conftest import REPO
import pytest

pytestmark = pytest.mark.bench   # the measurement tools' group: pytest -m bench


def test_gpu_multi_smoke_end_to_end(tmp_path):
    env = dict(os.environ, SMOKE="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "w"),
               PYTHON=sys.executable, SMOKE_STEPS="12")
    before = open(os.path.join(REPO, ".config")).read() if os.path.exists(
        os.path.join(REPO, ".config")) else None
    p = subprocess.run(["bash", "scripts/bench/gpu_multi.sh"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "multi-gpu.json").read_text())
    assert {r["status"] for r in doc["runs"].values()} == {"done"}
    assert doc["scaling"]["g2"]["ratio"] > 0
    assert [b["status"] for b in doc["jobs2"]] == ["done", "done"]
    assert all(b["alone_tokens_per_s"] for b in doc["jobs2"])
    k = doc["kill"]
    assert k["run_exit"] != 0 and k["status_after_kill"]["status"] == "failed"
    assert "-9" in k["status_after_kill"]["reason"]
    assert k["seconds_to_failed"] < 60
    assert k["final"]["status"] == "done" and k["final"]["steps"] == 12
    assert k["final_loss_diff_vs_g2"] == 0.0 and k["eval_loss_diff_vs_g2"] == 0.0
    after = open(os.path.join(REPO, ".config")).read() if os.path.exists(
        os.path.join(REPO, ".config")) else None
    assert after == before, "the script must leave the checkout's .config alone (KCONFIG_CONFIG)"
    md = (tmp_path / "out" / "multi-gpu.md").read_text()
    for section in ("JOBS=2", "A rank killed mid-run", "Phases"):
        assert section in md
