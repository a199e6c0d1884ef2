"""The layout issue 19 asks for stays true: no file edits sys.path, the project's packages are
installable (pyproject.toml), the tracked results stay a reference."""
import os
import re
import subprocess
import tomllib

from conftest import REPO

TRACKED = subprocess.run(["git", "-C", REPO, "ls-files"], capture_output=True,
                         text=True).stdout.split()


def test_no_file_edits_sys_path():
    bad = [f for f in TRACKED if f.endswith((".py", ".sh", ".Makefile", "Makefile"))
           and re.search(r"sys\.path\.(insert|append)", open(os.path.join(REPO, f)).read())]
    assert bad == []


def test_pyproject_installs_every_package_of_the_tree():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {f.split("/")[0] for f in TRACKED if f.endswith("/__init__.py") and f.count("/") == 1}
    assert tops and tops <= {p.rstrip("*") for p in include}
    for pkg in ("scripts/engine", "scripts/bench"):
        assert f"{pkg}/__init__.py" in TRACKED


def test_results_hold_references_not_a_lab_notebook():
    assert len([f for f in TRACKED if f.startswith("results/")]) < 40
