"""The package layout: imports flow one way (prefs <- reward <- rlft; ui -> prefs, reward only lazily),
and every package on disk ships in the distribution."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("prefs", "reward", "rlft", "ui")
TORCH_STACK = {"torch", "torchvision", "diffusers", "transformers", "open_clip", "peft", "accelerate"}

# package -> top-level modules it must never import, at module level or inside a function.
FORBIDDEN = {
    "prefs": {"reward", "rlft", "ui"} | TORCH_STACK,
    "reward": {"rlft", "ui"},
}
# package -> top-level modules it may import only inside functions (so importing it stays cheap).
LAZY_ONLY = {"ui": {"reward"}}


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level) for every absolute import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if`/`try` also run on import
        if isinstance(node, (ast.If, ast.Try)):
            module_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], node.lineno, id(node) in module_level) for name in names]
    return found


def violations(package: str, names: set[str], module_level_only: bool) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}" + (" at module level" if module_level_only else "")
        for path in python_files(package)
        for name, line, top in imports(path)
        if name in names and (top or not module_level_only)
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_forbidden_imports(package):
    bad = violations(package, FORBIDDEN[package], module_level_only=False)
    assert not bad, "imports must flow prefs <- reward <- rlft:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(LAZY_ONLY))
def test_lazy_only_imports(package):
    bad = violations(package, LAZY_ONLY[package], module_level_only=True)
    assert not bad, "\n".join(bad)


def test_every_package_on_disk_ships_and_nothing_else_does():
    from setuptools import find_namespace_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_namespace_packages(where=str(ROOT), include=find["include"], exclude=find.get("exclude", ())))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk <= shipped, f"not shipped: {sorted(on_disk - shipped)}"
    # the toy world's weights and the UI's static files ship as package data of namespace packages
    assert {"rlft.assets.toy.clip", "rlft.assets.toy.pipeline.unet", "ui.static", "prefs.migrations.versions"} <= shipped
    assert {name.split(".")[0] for name in shipped} == set(TOP_LEVEL)  # not tests, bench, tools or docs


def test_importing_rlft_is_cheap():
    # `import rlft` and the CLI group must not pull in torch: `rlft prefs ...` should start instantly.
    code = "import sys, rlft, rlft.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (sorted(TORCH_STACK),)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path, package: str, modules: set[str]) -> set[str]:
    """The modules of `package` that `path` imports anywhere in it (module level, in a function, or under
    TYPE_CHECKING: each is a dependency a reader has to follow), `from pkg import submodule` included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in targets:
            while name and name not in modules:  # `import prefs.stats.x` depends on prefs.stats
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] == package and name != here:
                found.add(name)
    return found


def import_cycles(package: str) -> list[list[str]]:
    """Every import cycle among `package`'s modules (strongly connected components of more than one module)."""
    files = {module_name(p): p for p in python_files(package) if "__pycache__" not in p.parts}
    graph = {m: internal_imports(p, package, set(files)) for m, p in files.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(m):  # Tarjan's algorithm
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return cycles


@pytest.mark.parametrize("package", TOP_LEVEL)
def test_no_import_cycles_inside_a_package(package):
    cycles = import_cycles(package)
    assert not cycles, f"import cycles in {package}: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyc.b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyc import a\n")
    (pkg / "c.py").write_text("from . import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert import_cycles("cyc") == [["cyc.a", "cyc.b"]]
