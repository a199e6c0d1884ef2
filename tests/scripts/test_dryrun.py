"""make dry-run: a table for every planned run, non-zero exit naming any run that fails."""
import json
import os
import re

from conftest import PY, REPO, run_cmd, write_config
from scripts.engine import progress

MATRIX = os.path.join(REPO, "scripts", "engine", "matrix.py")


def test_dry_run_of_a_defconfig_passes(tmp_path, results):
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/lenet5-adamwprune").read())
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "lenet5_adamwprune_state_s0.9-" in p.stdout and "61,706" in p.stdout
    assert "5/5 OK" in p.stdout
    assert not results.exists(), "dry-run writes nothing under results/"


def test_dry_run_flags_a_preset_that_does_not_fit(tmp_path, results):
    cfg = write_config(tmp_path / ".config", "CONFIG_HW_A10G=y\nCONFIG_GPU_MEMORY_GB=1\n"
                                             "CONFIG_LENET5_BATCH_SIZE=65536\n")
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg])
    assert p.returncode != 0
    assert "FAIL lenet5_adamw_none_s0-" in p.stdout
    assert "preset has 1 GiB" in p.stdout and "lower batch_size" in p.stdout


def test_a_gpu_preset_on_this_cpu_machine_warns_of_the_missing_gpu(tmp_path, results):
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/lenet5-h100").read())
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg], env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stdout + p.stderr        # a warning, not a failure
    table = [ln for ln in p.stdout.splitlines() if ln.startswith("lenet5_")]
    assert table and all(ln.endswith("WARN") for ln in table), p.stdout
    assert re.search(r"^WARN gpu: the preset runs on 1 GPU\(s\) \(device=cuda, CONFIG_GPUS=1\) "
                     r"but 0 are visible on this machine \(all \d+ runs\)", p.stdout, re.M), p.stdout
    assert "CPU-BASED ESTIMATE for a GPU preset" in p.stdout
    assert "data:" not in p.stdout, "MNIST with CONFIG_DATA_DOWNLOAD=y: the run fetches it"


def test_a_missing_data_set_is_a_warning_naming_its_folder(tmp_path, results):
    cfg = write_config(tmp_path / ".config", f'CONFIG_LENET5_DATASET_MNIST=y\n'
                                             f'CONFIG_DATA_DIR="{tmp_path / "data"}"\n')
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg])
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"WARN data: mnist is not on disk ({tmp_path / 'data' / 'MNIST'} missing)" in p.stdout
    assert "CONFIG_DATA_DOWNLOAD=y" in p.stdout


def test_the_default_matrix_gets_a_wall_time_per_run_and_in_all(tmp_path, results):
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/default").read())
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg])
    assert p.returncode == 0, p.stdout + p.stderr
    table = [ln for ln in p.stdout.splitlines() if ln.startswith("lenet5_")]
    assert len(table) == 13 and all(re.search(r"\s\d+(m\d\ds|s) cpu  OK$", ln) for ln in table), p.stdout
    assert re.search(r"^estimated wall time: \S+ for the matrix at JOBS=1$", p.stdout, re.M)
    assert "WARN" not in p.stdout

    # earlier finished runs of the same model, device and batch give the estimate instead
    from lenet5.config import Config
    run = results / "runs" / "lenet5_earlier"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "done"}))
    (run / "summary.json").write_text(json.dumps({"wall_time_s": 90.0, "steps": 45}))
    (run / "config.json").write_text(json.dumps({"model": "lenet5", "device": "cpu", "gpus": 1,
                                                 "batch_size": Config().batch_size}))
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg])
    steps = Config().epochs * (1437 // Config().batch_size)           # 2 s a step
    assert f"{progress.fmt_time(steps * 2)} runs  OK" in p.stdout, p.stdout
    assert "'runs': seconds per step of earlier finished runs" in p.stdout


def test_the_h200_resnet18_preset_is_estimated_from_its_measured_gpu_rate(tmp_path, results):
    """200 CIFAR-10 epochs at the trainer's img/s that scripts/bench/vision.py measured on an
    H200 for the same model, batch, data path and compile mode: the newest such row of
    results/benchmarks.csv, named by its date and device; without one, the CPU estimate."""
    import csv
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/resnet18-h200").read())
    with open(f"{REPO}/results/benchmarks.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["op"] == "train_vision" and
                (r["model"], r["batch"], r["data_path"], r["compile_mode"]) ==
                ("resnet18", "128", "gpu", "reduce-overhead") and "H200" in r["device"]]
    assert rows, "no measured H200 row for the preset in results/benchmarks.csv"
    newest = max(enumerate(rows), key=lambda ir: (ir[1]["date"], ir[0]))[1]  # ties: the later
    steps = 200 * (50000 // 128)
    want = progress.fmt_time(steps * 128 / float(newest["trainer_img_s"]))
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg])
    assert p.returncode == 0, p.stdout + p.stderr
    table = [ln for ln in p.stdout.splitlines() if ln.startswith("resnet18_")]
    assert len(table) == 2 and all(f"{want} bench  WARN" in ln for ln in table), p.stdout
    rate = float(newest["trainer_img_s"])
    assert (f"'bench': resnet18 batch 128 (gpu data path, compile reduce-overhead): 200 epochs, "
            f"{steps:,} steps at {rate:,.0f} img/s, the trainer's rate measured on "
            f"{newest['device']} on {newest['date']}") in p.stdout, p.stdout

    # only a row of the same shape on the preset's GPU counts, and the newest of them
    from scripts.bench import table as bench_table
    fake = tmp_path / "bench.csv"
    base = {"op": "train_vision", "model": "resnet18", "batch": 128, "data_path": "gpu",
            "compile_mode": "reduce-overhead", "trainer_img_s": 1000.0}
    bench_table.append([dict(base, trainer_img_s=9e9)], {"device": "NVIDIA H100", "date": "2027-01-01"},
                       "r", str(fake), commit="c")
    bench_table.append([dict(base, batch=512, trainer_img_s=9e9)],
                       {"device": "NVIDIA H200", "date": "2027-01-01"}, "r", str(fake), commit="c")
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg], env_extra={"KNLP_BENCHMARKS": str(fake)})
    assert "bench" not in p.stdout and "CPU-BASED ESTIMATE" in p.stdout, p.stdout
    for date, rate in (("2026-01-01", 100.0), ("2026-06-01", 1000.0)):
        bench_table.append([dict(base, trainer_img_s=rate)], {"device": "NVIDIA H200", "date": date},
                           "r", str(fake), commit="c")
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg], env_extra={"KNLP_BENCHMARKS": str(fake)})
    assert f"{progress.fmt_time(steps * 128 / 1000.0)} bench" in p.stdout, p.stdout
    assert "on NVIDIA H200 on 2026-06-01" in p.stdout


def test_the_dry_run_under_slurm_shows_the_arrays_it_would_submit(tmp_path, results):
    """Through the executor seam: the SLURM executor's preview lists each job array with
    its sbatch command and #SBATCH lines, submits nothing, and this login-like machine's
    missing GPUs are no warning (the allocation has them)."""
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/lenet5-h100").read()
                       + 'CONFIG_EXECUTOR_SLURM=y\nCONFIG_SLURM_PARTITION="gpu"\n'
                       'CONFIG_SLURM_TIME_LIMIT="4:00:00"\nCONFIG_SLURM_CPUS_PER_GPU=8\n'
                       'CONFIG_SLURM_MEM_PER_GPU="64G"\n')
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg, "--jobs", "4"],
                env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stdout + p.stderr
    n = len([ln for ln in p.stdout.splitlines() if ln.startswith("lenet5_")])
    assert n > 4 and f"slurm executor: {n} run(s) in 1 job array(s)" in p.stdout, p.stdout
    assert re.search(rf"^  array 0: {n} task\(s\), 1 GPU\(s\) each: sbatch --parsable "
                     rf"\S+/matrices/lenet5-h100-[0-9a-f]{{8}}/slurm/array-0\.sh$", p.stdout, re.M), p.stdout
    for line in (f"--array=0-{n - 1}%4", "--gres=gpu:1", "--cpus-per-gpu=8", "--mem-per-gpu=64G",
                 "--partition=gpu", "--time=4:00:00", "--signal=B:USR2@120", "--requeue"):
        assert f"    #SBATCH {line}\n" in p.stdout, (line, p.stdout)
    assert re.search(r"^    task 0: lenet5_sgd_none_s0-[0-9a-f]{8}$", p.stdout, re.M), p.stdout
    assert "estimated wall time:" in p.stdout and "at JOBS=4" in p.stdout
    assert "WARN gpu:" not in p.stdout, "a login node has no GPU; the allocation has them"
    assert not results.exists(), "dry-run writes nothing under results/"
