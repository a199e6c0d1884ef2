"""The models' defconfigs: each plans cleanly with its hardware preset, `make dry-run`
passes on the CPU (the largest in under a minute), and a run that cannot fit its preset's
GPU is flagged with the reason."""
import importlib
import os
import time

import pytest
import torch

from conftest import PY, REPO, run_cmd, write_config
from lib import dryrun
from scripts.engine import plan as planner

CPU_SMOKE = ("resnet18", "resnet50", "gpt2")
GPU = ("w7900", "a10g", "a100", "h100")
PRESETS = [*CPU_SMOKE, *(f"{m}-{hw}" for m in ("resnet18", "resnet50", "gpt2", "lenet5") for hw in GPU),
           "resnet18-state-pruning-compare", "resnet18-movement-pruning-compare",
           "resnet18-comprehensive-pruning-compare", "resnet18-adam-all-pruning-methods",
           "resnet18-h200"]


def plan_of(tmp_path, name, extra=""):
    text = open(os.path.join(REPO, "defconfigs", name)).read() + extra
    return planner.plan(write_config(tmp_path / f"{name}.config", text))


def spec(model):
    return importlib.import_module(f"{model}.train").SPEC


@pytest.mark.parametrize("name", PRESETS)
def test_preset_plans_for_its_hardware(tmp_path, name):
    first = open(os.path.join(REPO, "defconfigs", name)).readline()
    assert first.startswith("# ") and ("CPU" in first or "one " in first), first
    p = plan_of(tmp_path, name)
    assert p.name == name and p.runs
    hw = name.split("-")[1] if name.split("-")[-1] in (*GPU, "h200") else ("w7900" if "compare" in name
                                                                 or "methods" in name else "cpu")
    assert p.hw == hw
    for cfg in p.runs:
        assert cfg.model == name.split("-")[0]
        if hw == "cpu":
            assert (cfg.device, cfg.precision, cfg.compile) == ("cpu", "fp32", False)
        else:
            assert (cfg.device, cfg.precision, cfg.compile) == ("cuda", "bf16", True)
            assert cfg.gpu_memory_gb == {"w7900": 48, "a10g": 24, "h200": 140}.get(hw, 80)


def test_cpu_smoke_presets_dry_run(tmp_path):
    torch.set_num_threads(1)
    for name in CPU_SMOKE:
        for cfg in plan_of(tmp_path, name).runs:
            row = dryrun.check(spec(cfg.model), cfg)
            assert row["status"] == "OK", row


def test_gpu_presets_dry_run_one_run_each(tmp_path):
    torch.set_num_threads(1)
    for name in ("resnet18-h100", "resnet50-a10g", "lenet5-h100"):
        cfg = plan_of(tmp_path, name).runs[0]
        row = dryrun.check(spec(cfg.model), cfg)
        assert row["status"] == "OK", row
    assert row["params"] == 61_706


def test_largest_preset_dry_run_takes_under_a_minute(tmp_path, results):
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/gpt2-h100").read())
    t0 = time.time()
    p = run_cmd([PY, os.path.join(REPO, "scripts", "engine", "matrix.py"), "dry-run", "--config", cfg],
                env_extra={"OMP_NUM_THREADS": "1"})
    took = time.time() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3/3 OK" in p.stdout and "gpt2_adamwprune_state_s0.5-" in p.stdout
    # what this guards: the dry-run takes two steps of a shrunk batch, never the preset's
    # recipe (a single real step of GPT-2 124M at 64 x 1024 tokens takes minutes on a CPU).
    # It takes ~5 s; the bound is loose so that no CPU or load makes it flaky.
    assert took < 180, f"dry-run of gpt2-h100 took {took:.0f}s: does it run the full recipe?"


def test_a_batch_that_cannot_fit_the_a10g_is_flagged(tmp_path):
    torch.set_num_threads(1)
    p = plan_of(tmp_path, "resnet18-a10g", "CONFIG_RESNET18_BATCH_SIZE=65536\n")
    row = dryrun.check(spec("resnet18"), p.runs[0])
    assert row["status"] == "FAIL"
    assert "preset has 24 GiB" in row["reason"] and "lower batch_size" in row["reason"]
    ok = dryrun.check(spec("resnet18"), plan_of(tmp_path, "resnet18-a10g").runs[0])
    assert ok["status"] == "OK" and ok["est_peak_mb"] < 24 * 1024


@pytest.mark.parametrize("name, gpus", [("gpt2-h200", 1), ("gpt2-h200-2gpu", 2),
                                        ("gpt2-h200-4gpu", 4)])
def test_h200_presets_keep_the_global_batch_and_the_per_gpu_micro_batch(tmp_path, name, gpus):
    p = plan_of(tmp_path, name)
    assert p.name == name and p.hw == "h200" and p.runs
    for cfg in p.runs:
        assert (cfg.gpus, cfg.device, cfg.precision, cfg.compile) == (gpus, "cuda", "bf16", True)
        assert cfg.gpu_memory_gb == 140 and cfg.batch_size == 64
        assert cfg.batch_size // (cfg.gpus * cfg.grad_accum) == 16
