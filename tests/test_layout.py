"""The layout issue 19 asks for stays true: no file edits sys.path, the project's packages are
installable (pyproject.toml), the tracked results stay a reference."""
import ast
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


def _lib_imports():
    """{module: (lib modules it imports at the top, lib modules imported inside functions)}"""
    graph = {}
    for f in sorted(os.listdir(os.path.join(REPO, "lib"))):
        if not f.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(REPO, "lib", f)).read())
        top = {n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        names = ({}, {})
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib"):
                mods = [f"lib.{a.name}" for a in node.names] if node.module == "lib" else [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names if a.name.startswith("lib.")]
            else:
                continue
            names[node not in top].update(dict.fromkeys(mods))
        graph[f"lib.{f[:-3]}"] = (set(names[0]), set(names[1]))
    return graph


def test_lib_imports_are_at_the_top_and_acyclic():
    graph = _lib_imports()
    assert {m: inner for m, (_, inner) in graph.items() if inner} == {}
    seen, stack = set(), []

    def visit(m):
        assert m not in stack, f"import cycle: {' -> '.join(stack + [m])}"
        if m in seen:
            return
        stack.append(m)
        for dep in graph.get(m, (set(), set()))[0]:
            visit(dep)
        stack.pop()
        seen.add(m)
    for m in graph:
        visit(m)
    assert not any("lib.trainer" in deps for m, (deps, _) in graph.items() if m != "lib.trainer")
