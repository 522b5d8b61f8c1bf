"""The layers of ARCHITECTURE.md, enforced by reading every import of sparsetune/ and kernels/ with `ast`.

Imports inside functions count, relative imports are resolved, and the checker is itself tested on
small synthetic trees, so a rule that stopped biting would fail here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from conftest import REPO

MAX_LINES = 400

# (package or module the rule is about, the packages/modules it must never import); names are
# dotted module paths. kernels/ is installed as sparsetune.kernels.
LOWER = ("sparsetune.profile", "sparsetune.runtime", "sparsetune.attention", "sparsetune.kernels")
TUNER = ("sparsetune.workload", "sparsetune.evaluate", "sparsetune.search", "sparsetune.deploy", "sparsetune.serving",
         "sparsetune.cli")
RULES: list[tuple[str, tuple[str, ...]]] = [(low, TUNER) for low in LOWER]
# kernels/ imports nothing of sparsetune but itself.
KERNELS_ONLY = "sparsetune.kernels"


def module_files(roots: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under each root (root name -> folder)."""
    out = {}
    for name, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The known modules `module` imports anywhere in its file (functions included), relative ones resolved.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    known = set(known)
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module: its nearest module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def graph(roots: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, Path]]:
    files = module_files(roots)
    return {m: imports_of(m, p, files) for m, p in files.items()}, files


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(edges: dict[str, set[str]], rules: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    out = []
    for module, targets in sorted(edges.items()):
        for lower, forbidden in rules:
            if not _inside(module, lower):
                continue
            for target in sorted(targets):
                if any(_inside(target, f) for f in forbidden):
                    out.append(f"{module} imports {target}: {lower} must not import {', '.join(forbidden)}")
    return out


def kernel_violations(edges: dict[str, set[str]], kernels: str, root: str) -> list[str]:
    return [f"{m} imports {t}: {kernels} imports nothing of {root} but itself"
            for m, ts in sorted(edges.items()) if _inside(m, kernels)
            for t in sorted(ts) if _inside(t, root) and not _inside(t, kernels)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def too_long(files: dict[str, Path], limit: int = MAX_LINES) -> list[str]:
    return [f"{m} ({p}) has {n} lines, more than {limit}" for m, p in sorted(files.items())
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit]


# ------------------------------------------------------------------------------ the real tree

ROOTS = {"sparsetune": REPO / "sparsetune", "sparsetune.kernels": REPO / "kernels"}


@pytest.fixture(scope="module")
def tree():
    return graph(ROOTS)


def test_lower_layers_never_import_the_tuner(tree):
    edges, _ = tree
    assert violations(edges, RULES) == []


def test_kernels_import_nothing_of_sparsetune(tree):
    edges, _ = tree
    assert kernel_violations(edges, KERNELS_ONLY, "sparsetune") == []


def test_no_import_circles(tree):
    edges, _ = tree
    assert cycles(edges) == []


def test_no_module_over_the_line_limit(tree):
    _, files = tree
    assert too_long(files) == []


def test_the_checker_sees_the_whole_tree(tree):
    edges, files = tree
    assert "sparsetune.search.run" in files and "sparsetune.kernels.configs" in files
    assert "sparsetune.kernels.configs" in edges["sparsetune.profile.profile"]  # one launch-config rule
    assert "sparsetune.runtime.policy" in edges["sparsetune.runtime.hf_attention"]  # a function-level import


# ------------------------------------------------------------------------------ the checker can fail


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_an_upward_import_inside_a_function(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "",
        "profile/__init__.py": "",
        "profile/rules.py": "def f():\n    from ..search import run\n    return run\n",
        "search/__init__.py": "",
        "search/run.py": "from ..profile import rules\n",
    })
    edges, _ = graph({"pkg": root})
    assert edges["pkg.profile.rules"] == {"pkg.search.run"}
    found = violations(edges, [("pkg.profile", ("pkg.search",))])
    assert found == ["pkg.profile.rules imports pkg.search.run: pkg.profile must not import pkg.search"]
    assert cycles(edges) == [["pkg.profile.rules", "pkg.search.run"]]


def test_checker_finds_kernels_importing_the_package_and_long_modules(tmp_path):
    pkg = _write(tmp_path / "pkg", {"__init__.py": "", "errors.py": "X = 1\n"})
    kern = _write(tmp_path / "kern", {"__init__.py": "import pkg.errors\n", "long.py": "x = 1\n" * 401})
    edges, files = graph({"pkg": pkg, "pkg.kernels": kern})
    assert kernel_violations(edges, "pkg.kernels", "pkg") == [
        "pkg.kernels imports pkg.errors: pkg.kernels imports nothing of pkg but itself"]
    assert too_long(files) == [f"pkg.kernels.long ({kern / 'long.py'}) has 401 lines, more than 400"]


def test_checker_resolves_from_package_import_module_and_absolute_names(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "from . import a\nfrom .b import VALUE\n",
        "a.py": "import pkg.b\n",
        "b.py": "VALUE = 1\n",
    })
    edges, _ = graph({"pkg": root})
    assert edges["pkg"] == {"pkg.a", "pkg.b"} and edges["pkg.a"] == {"pkg.b"} and cycles(edges) == []
