"""The package layout: imports flow one way (prefs <- reward <- rlft; ui -> prefs, reward only lazily),
and every package on disk ships in the distribution."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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
