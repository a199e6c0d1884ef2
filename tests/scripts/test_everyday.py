"""Everyday use that must never lose work or end in a traceback (issue 20): archive entries
are never overwritten, a corrupted .config is one line (and a defconfig replaces it), a
closed pipe ends a command quietly."""
import os
import subprocess

from conftest import PY, REPO, run_cmd, write_config
from scripts.engine import report

MATRIX = os.path.join(REPO, "scripts", "engine", "matrix.py")


def _matrix_dir(path, summary: str):
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.md").write_text(summary)
    (path / "config").write_text("CONFIG_X=y\n")
    return str(path)


def test_an_archive_entry_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ARCHIVE", str(tmp_path / "archive"))
    full = _matrix_dir(tmp_path / "m" / "default-1234abcd", "full results\n")
    first = report.archive(full)
    assert os.path.basename(first).endswith("-default-1234abcd")
    assert report.archive(full) == first, "the same files again: no new entry"
    partial = _matrix_dir(tmp_path / "m2" / "default-1234abcd", "one run re-done\n")
    second = report.archive(partial)
    assert second == first + "-2"
    assert open(os.path.join(first, "summary.md")).read() == "full results\n"
    assert open(os.path.join(second, "summary.md")).read() == "one run re-done\n"
    other = report.archive(_matrix_dir(tmp_path / "m3" / "default-99999999", "x\n"))
    assert other not in (first, second), "another config's matrix: its own entry"


def test_a_corrupted_config_is_one_line_and_a_defconfig_replaces_it(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_bytes(bytes(range(256)) * 8)
    p = run_cmd([PY, MATRIX, "dry-run", "--config", str(cfg)])
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout
    line = (p.stdout + p.stderr).strip()
    assert len(line.splitlines()) == 1 and str(cfg) in line and "make defconfig-" in line, line
    p = run_cmd([PY, "-m", "scripts.engine.kconfig", "defconfig", "lenet5"],
                env_extra={"KCONFIG_CONFIG": str(cfg)})
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert cfg.read_text().count("CONFIG_") > 10
    assert (tmp_path / ".config.old").read_bytes() == bytes(range(256)) * 8


def test_a_closed_pipe_ends_a_command_quietly():
    """`true` closes the pipe before the command writes (it starts in ~0.1 s): the write
    always meets a closed pipe, as `make status | head` does once head has its lines."""
    for reader in ("true", "head -n 1"):
        p = subprocess.run(f"{PY} -m scripts.engine.kconfig list | {reader}; exit ${{PIPESTATUS[0]}}",
                           shell=True, executable="/bin/bash", cwd=REPO, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, (reader, p.stderr)
        assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, (reader, p.stderr)


def test_a_make_that_cannot_run_records_nothing(tmp_path, results):
    """A GPU preset on a machine without a GPU (CUDA_VISIBLE_DEVICES="" hides any) fails
    before a matrix folder or LATEST exists, so `make status` / `make continue` never point
    at a matrix that cannot run."""
    cfg = write_config(tmp_path / ".config", open(f"{REPO}/defconfigs/lenet5-h100").read())
    p = run_cmd([PY, MATRIX, "run", "--config", cfg], env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2 and "none is visible" in p.stderr, p.stderr
    assert not (results / "matrices").exists() or not os.listdir(results / "matrices")


def test_make_variables_work_or_are_refused_by_name(tmp_path, results):
    cfg = write_config(tmp_path / ".config", "CONFIG_MATRIX_SEEDS=\"1\"\n")
    for cmd, var, flag in (("status", "TIME=", ["--time", "30"]),
                           ("continue", "SEEDS/SEED=", ["--seeds", "2"]),
                           ("update-graphs", "JOBS=", ["--jobs", "2"])):
        p = run_cmd([PY, MATRIX, cmd, "--config", cfg, *flag])
        assert p.returncode != 0 and f"{var} does nothing for `make {cmd}`" in p.stderr, p.stderr
    # TIME= and SEEDS= reach the dry-run's plan: two seeds, ids showing them, the budget set
    p = run_cmd([PY, MATRIX, "dry-run", "--config", cfg, "--seeds", "3 4", "--time", "30"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "lenet5_adamw_none_s0_seed3-" in p.stdout and "_seed4-" in p.stdout
    p1 = run_cmd([PY, MATRIX, "dry-run", "--config", cfg, "--seeds", "3 4"])
    assert p1.stdout.split("_seed3-")[1][:8] != p.stdout.split("_seed3-")[1][:8], "TIME= ignored"
    make = run_cmd(["make", "--no-print-directory", "-n", "dry-run", "SEED=5"])
    assert '--seeds "5"' in make.stdout, make.stdout + make.stderr
    both = run_cmd(["make", "--no-print-directory", "-n", "dry-run", "SEED=5", "SEEDS=1 2"])
    assert both.returncode != 0 and "SEED= and SEEDS= both given" in both.stderr
