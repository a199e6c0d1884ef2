"""Shared test helpers: run the real commands as subprocesses against a private results/."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pytest.ini puts this tree on sys.path; its subprocesses (train.py, the matrix) import it too,
# not whatever tree the venv's editable install points at (another clone, a worktree)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)


def run_cmd(argv, env_extra=None, cwd=REPO, timeout=600, check=False):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A private results/ for this test (KNLP_RESULTS), in the environment of subprocesses."""
    path = tmp_path / "results"
    monkeypatch.setenv("KNLP_RESULTS", str(path))
    return path


def write_config(path, lines: str):
    """A .config from defconfig-style lines, through kconfiglib (olddefconfig semantics)."""
    import kconfiglib
    os.environ["srctree"] = REPO
    kconf = kconfiglib.Kconfig(os.path.join(REPO, "Kconfig"), warn_to_stderr=False)
    src = str(path) + ".in"
    with open(src, "w") as f:
        f.write(lines)
    kconf.load_config(src)
    assert not kconf.warnings, kconf.warnings
    kconf.write_config(str(path))
    return str(path)


PY = sys.executable
