"""kernels.autotune: grid search once per key, persistent JSON cache per device and versions."""
import json

import pytest
import torch

from kernels import _triton, autotune
from kernels._common import KernelPlanError

PLANS = [{"BLOCK_M": 64, "num_warps": 4}, {"BLOCK_M": 128, "num_warps": 8},
         {"BLOCK_M": 32, "num_warps": 2}]
KEY = {"dtype": "bfloat16", "M": 16384, "N": 768}


def timings(ms_by_block):
    calls = []

    def bench(plan):
        calls.append(plan["BLOCK_M"])
        value = ms_by_block[plan["BLOCK_M"]]
        if isinstance(value, Exception):
            raise value
        return value
    return bench, calls


def test_cache_location_and_name(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    path = autotune.cache_file("NVIDIA H100 80GB HBM3")
    assert path.parent == tmp_path
    assert path.name.startswith("NVIDIA-H100-80GB-HBM3__torch-")
    assert f"triton-{_triton.VERSION}" in path.name
    monkeypatch.delenv("KERNELS_CACHE_DIR")
    assert str(autotune.cache_dir()).endswith(".cache/knlp-kernels")


def test_tunes_once_then_reads_the_json(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    bench, calls = timings({64: 0.5, 128: 0.2, 32: 0.9})
    best = autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench)
    assert best == PLANS[1] and sorted(calls) == [32, 64, 128]
    data = json.loads(autotune.cache_file("GPU-A").read_text())
    entry = data["entries"]["matmul|dtype=bfloat16|M=16384|N=768"]
    assert entry["config"] == PLANS[1] and entry["ms"] == 0.2
    assert data["torch"] == torch.__version__ and data["triton"] == _triton.VERSION

    # a second run (a fresh process: new Autotuner) reads the file and times nothing
    bench2, calls2 = timings({64: 0.1, 128: 0.2, 32: 0.9})
    assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench2) == PLANS[1]
    assert calls2 == []
    # another device has its own file
    autotune.Autotuner().lookup_or_tune("GPU-B", "matmul", KEY, PLANS, bench2)
    assert len(calls2) == 3 and autotune.cache_file("GPU-B").exists()


def test_new_versions_start_a_new_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    bench, calls = timings({64: 0.5, 128: 0.2, 32: 0.9})
    autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench)
    monkeypatch.setattr(_triton, "VERSION", "99.0.0")
    autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench)
    assert len(calls) == 6 and len(list(tmp_path.glob("*.json"))) == 2


def test_stale_plan_retunes_and_failures_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    bench, _ = timings({64: 0.5, 128: 0.2, 32: 0.9})
    autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench)
    # the code's plan list changed: the cached winner is no longer a candidate
    new_plans = [PLANS[0], PLANS[2]]
    bench2, calls2 = timings({64: RuntimeError("out of shared memory"), 32: 0.7})
    best = autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, new_plans, bench2)
    assert best == PLANS[2] and sorted(calls2) == [32, 64]
    entry = json.loads(autotune.cache_file("GPU-A").read_text())["entries"][
        "matmul|dtype=bfloat16|M=16384|N=768"]
    assert "out of shared memory" in next(iter(entry["errors"].values()))


def test_a_new_plan_is_timed_against_the_cached_one_only(tmp_path, monkeypatch):
    """A candidate the cache never timed (a plan family added since): the cached plan and
    the new one are timed, nothing else; the faster wins and the entry keeps every timing,
    so the next process times nothing."""
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    bench, _ = timings({64: 0.5, 128: 0.2})
    autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS[:2], bench)
    bench2, calls2 = timings({64: 0.5, 128: 0.3, 32: 0.1})
    assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench2) == PLANS[2]
    assert sorted(calls2) == [32, 128]
    entry = json.loads(autotune.cache_file("GPU-A").read_text())["entries"][
        "matmul|dtype=bfloat16|M=16384|N=768"]
    assert set(entry["timings"]) == {autotune.plan_str(p) for p in PLANS}
    assert entry["timings"][autotune.plan_str(PLANS[1])] == 0.3   # timed again
    bench3, calls3 = timings({64: 0.5, 128: 0.2, 32: 0.9})
    assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench3) == PLANS[2]
    assert calls3 == []


def test_candidate_sets_sharing_a_key_settle_after_one_round_each(tmp_path, monkeypatch):
    """Two products in one key's size bucket can get different candidates (a split-K plan
    only where tiles leave SMs idle): each tunes once, then neither re-tunes; a new plan
    slower than the cached one leaves the cached one in place."""
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    ms = {64: 0.5, 128: 0.2, 32: 0.9}
    first, second = PLANS[:2], [PLANS[1], PLANS[2]]
    bench, calls = timings(ms)
    assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, first, bench) == PLANS[1]
    assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, second, bench) == PLANS[1]
    assert sorted(calls) == [32, 64, 128, 128]
    calls.clear()
    for plans in (first, second, first):
        assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, plans, bench) == \
            PLANS[1]
    assert calls == []


def test_all_plans_failing_is_a_structured_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    bench, _ = timings({64: RuntimeError("x"), 128: RuntimeError("y"), 32: RuntimeError("z")})
    with pytest.raises(KernelPlanError) as info:
        autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench)
    assert info.value.stage == "compile"


def test_corrupt_cache_is_ignored(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    autotune.cache_file("GPU-A").write_text("{not json")
    bench, calls = timings({64: 0.5, 128: 0.2, 32: 0.9})
    assert autotune.Autotuner().lookup_or_tune("GPU-A", "matmul", KEY, PLANS, bench) == PLANS[1]
    assert "ignoring unreadable cache" in capsys.readouterr().err


def test_cpu_and_switch_off_use_the_first_plan(monkeypatch):
    bench, calls = timings({64: 0.5, 128: 0.2, 32: 0.9})
    assert autotune.pick("matmul", KEY, PLANS, bench, torch.device("cpu")) == PLANS[0]
    assert calls == []


def test_bucket():
    """Four buckets an octave: GPT-2's weight-gradient products with M = 2304 and 3072
    (out features) tune apart, token counts up to 25% apart share a plan."""
    sizes = (1, 2, 3, 5, 1000, 1024, 1025, 2304, 3072, 768, 769, 16384, 50176)
    assert [autotune.bucket(n) for n in sizes] == \
        [1, 2, 3, 5, 1024, 1024, 1280, 2560, 3072, 768, 896, 16384, 57344]
    for n in range(1, 5000):
        b = autotune.bucket(n)
        assert n <= b < n * 1.25 + 1 and autotune.bucket(b) == b


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_without_gpu_says_why(capsys):
    assert autotune.main(["--preset", "gpt2"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
