"""make dry-run: a table for every planned run, non-zero exit naming any run that fails."""
import os

from conftest import PY, REPO, run_cmd, write_config

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
