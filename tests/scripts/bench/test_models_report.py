"""scripts/bench/models_report.py, the report of gpu_models.sh, on a small run folder of the
files the script leaves (steps.txt, two trainer run folders, the trainer benchmark's JSON):
the numbers in models.json and the rows of models.md, a failed run and a missing benchmark."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from scripts.bench import models_report

pytestmark = pytest.mark.bench   # the measurement tools' group: pytest -m bench

ENV = {"gpu": "NVIDIA H200", "torch": "2.9.0", "triton": "3.5.0", "cuda": "12.8",
       "git_commit": "abc1234", "git_dirty": True}
BENCH = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0",
         "config": {"vocab_size": 50304, "batch_size": 64, "block_size": 1024,
                    "precision": "bf16", "grad_accum": 4},
         "trainer": {"window_steps": [50, 150], "losses": [[10, 10.9], [150, 4.3219]],
                     "val_perplexity": 75.123, "val_loss": 4.319, "tokens_per_s": 250000.4,
                     "peak_memory_mb": 30000.0, "mfu": 0.42,
                     "checkpoint_s_in_window": [0.5, 0.25]},
         "bare_fused": {"tokens_per_s": 260000.0, "mfu": 0.44, "peak_memory_mb": 28000.0,
                        "steps": 60},
         "bare_foreach": {"tokens_per_s": 240000.0, "mfu": 0.4, "peak_memory_mb": 29000.0},
         "flops_per_token": 8.5e8, "ratio_trainer_vs_bare_fused": 0.9615,
         "ratio_trainer_vs_bare_foreach": 1.0417, "ratio_bare_foreach_vs_fused": 0.9231,
         "checkpoint_share": 0.0123, "dataloader_ms_per_step": 3.14}


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_runs(root, bench=True):
    """resnet18 done (3 train rows, 2 evals, 60 monitor samples); resnet50 killed by its
    timeout before it wrote a summary; bench.json unless bench is False."""
    runs = root / "runs"
    runs.mkdir()
    (runs / "steps.txt").write_text("resnet18 0 56\nresnet50 124 80\nbench_trainer 0 102\n")
    r18 = runs / "resnet18"
    write_json(r18 / "summary.json", {"steps": 300, "eval_accuracy": 91.27, "eval_loss": 0.3104,
                                      "throughput": 12345.6, "peak_memory_mb": 1536.4,
                                      "wall_time_s": 41.6})
    write_json(r18 / "status.json", {"status": "done", "reason": "finished", "environment": ENV})
    write_json(r18 / "config.json", {"dataset": "digits", "width": 64, "batch_size": 128,
                                     "optimizer": "sgd", "lr": 0.1, "precision": "bf16",
                                     "compile": True, "max_steps": 300, "device": "cuda",
                                     "seed": 7})
    rows = [{"kind": "train", "step": s, "loss": loss, "throughput": tp}
            for s, loss, tp in ((25, 2.5, 100.0), (50, 1.25, 5000.0), (300, 0.25, 5100.0))]
    rows += [{"kind": "eval", "step": 100, "loss": 0.9, "accuracy": 70.0},
             {"kind": "eval", "step": 300, "loss": 0.31}]
    rows += [{"kind": "system", "gpu_util": float(i), "gpu_mem_mb": 1000.0 + i,
              "gpu_power_w": 100.0} for i in range(60)]
    (r18 / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    write_json(runs / "resnet50" / "status.json",
               {"status": "failed", "reason": "killed by signal 15"})
    write_json(runs / "resnet50" / "config.json", {"width": 64})
    if bench:
        write_json(runs / "bench.json", BENCH)
    out = root / "out"
    out.mkdir()
    return runs, out


def test_report_of_a_full_run(tmp_path):
    """As gpu_models.sh calls it: device and versions from the benchmark, git from the model
    runs' environment; every row's numbers from the files."""
    runs, out = make_runs(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "scripts.bench.models_report", str(runs),
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "models.json").read_text())
    md = (out / "models.md").read_text()
    assert proc.stdout == md

    assert doc["steps"] == {"resnet18": {"exit": 0, "seconds": 56},
                            "resnet50": {"exit": 124, "seconds": 80},
                            "bench_trainer": {"exit": 0, "seconds": 102}}
    assert doc["device"] == "NVIDIA H100 80GB HBM3"
    assert doc["versions"] == {"torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0",
                               "git_commit": "abc1234", "git_dirty": True}
    r18, r50 = doc["models"]["resnet18"], doc["models"]["resnet50"]
    assert r18["status"] == "done" and r18["summary"]["throughput"] == 12345.6
    assert "seed" not in r18["config"] and r18["config"]["lr"] == 0.1
    assert r18["train"] == [[25, 2.5, 100.0], [50, 1.25, 5000.0], [300, 0.25, 5100.0]]
    assert r18["eval"] == [[100, 0.9, 70.0], [300, 0.31, None]]
    assert len(r18["gpu_samples"]) == 50 and r18["gpu_samples"][49] == [49.0, 1049.0, 100.0]
    assert r50 == {"status": "failed", "reason": "killed by signal 15", "environment": None,
                   "summary": None, "config": {**dict.fromkeys(models_report.CONFIG_KEYS),
                                               "width": 64},
                   "train": [], "eval": [], "gpu_samples": []}
    assert doc["bench"] == BENCH

    lines = md.splitlines()
    assert lines[0] == f"# ResNet-18, ResNet-50 and GPT-2 on NVIDIA H100 80GB HBM3, {doc['date']}"
    assert lines[2].startswith("torch 2.11.0, triton 3.6.0, CUDA 13.0; git abc1234 "
                               "(dirty: True).")
    assert ("| resnet18 (width 64) | digits 3x32x32 | 300 x 128 | bf16 / compiled | "
            "2.500 -> 0.250 | accuracy 91.3%, loss 0.310 | 12,346 img/s | 1,536 MiB | 42 s |"
            in lines)
    assert "| resnet50 | | | | FAILED: killed by signal 15 | | | | |" in lines
    assert ("| gpt2 124M shape (vocab 50304) | stdlib, byte tokens | 150 x 64 x 1024 | "
            "bf16 / compiled | 10.900 -> 4.322 | perplexity 75.12, loss 4.319 | "
            "250,000 tokens/s | 30,000 MiB | |" in lines)
    assert ("64 sequences x 1024 tokens per optimizer step in 4 micro-steps; timed over steps "
            "50-150 (trainer) and 60 steps after warm-up (bare); MFU against 989.5 TFLOP/s, "
            "850 MFLOP per token." in lines)
    assert ("| full trainer (lib/trainer.py, lib/optim.py AdamW) | 250,000 | 42.0% | "
            "30,000 MiB | 0.962x |" in lines)
    assert "| bare step, fused AdamW | 260,000 | 44.0% | 28,000 MiB | 1.000x |" in lines
    assert "| bare step, foreach AdamW | 240,000 | 40.0% | 29,000 MiB | 0.923x |" in lines
    assert ("- trainer / bare fused: **0.962x** (target >= 0.95x); trainer / bare foreach: "
            "1.042x; bare foreach / fused: 0.923x." in lines)
    assert ("- checkpoints: 2 saves in the timed window, 0.50 s, 0.25 s on the training "
            "loop's path = 1.2% of it." in lines)
    assert any(x.startswith("- data path (sampler, seeded windows, collate) alone: 3.1 ms")
               for x in lines)


def test_report_without_the_trainer_benchmark(tmp_path):
    """bench_trainer died: device and versions come from the model runs' environment, and
    neither the GPT-2 row nor the trainer section is written."""
    runs, out = make_runs(tmp_path, bench=False)
    doc = models_report.collect(str(runs))
    assert doc["bench"] is None and doc["device"] == "NVIDIA H200"
    assert doc["versions"] == {"torch": "2.9.0", "triton": "3.5.0", "cuda": "12.8",
                               "git_commit": "abc1234", "git_dirty": True}
    md = models_report.markdown(doc)
    assert md.startswith("# ResNet-18, ResNet-50 and GPT-2 on NVIDIA H200, ")
    assert "gpt2" not in md and "## The trainer" not in md
    assert md.splitlines()[-1] == "| resnet50 | | | | FAILED: killed by signal 15 | | | | |"


def test_a_file_cut_off_mid_write_reads_as_missing(tmp_path):
    (tmp_path / "summary.json").write_text('{"steps": 3')
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train"}\n{"kind": "tr')
    assert models_report.load(str(tmp_path / "summary.json")) is None
    assert models_report.load(str(tmp_path / "metrics.jsonl")) is None
    assert models_report.load(str(tmp_path / "absent.json")) is None
