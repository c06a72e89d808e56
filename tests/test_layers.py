"""The house's layers, enforced: the import-linter contract in pyproject.toml, no import cycle, no
skinscan_edge import inside a function, and every module importable on its own."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import scaled_timeout

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "skinscan_edge"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _modules() -> list[str]:
    out = []
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(REPO).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _lint(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=scaled_timeout(300), env={**os.environ, **(env or {})})


def test_the_layer_contract_is_kept():
    done = _lint(REPO, {"PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "2 kept, 0 broken" in done.stdout, done.stdout + done.stderr


def test_the_contract_catches_an_import_up_the_layers(tmp_path):
    """A copy of the package where core imports the evaluation layer: the same contract breaks."""
    shutil.copytree(PACKAGE, tmp_path / "skinscan_edge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "skinscan_edge" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom skinscan_edge.evaluation import client  # noqa: E402\n")
    done = _lint(tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0 and "BROKEN" in done.stdout, done.stdout + done.stderr
    assert "skinscan_edge.core.errors -> skinscan_edge.evaluation.client" in done.stdout, done.stdout


def test_no_import_cycle_among_the_modules():
    import grimp

    graph = grimp.build_graph("skinscan_edge", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported))
    assert cycles == [], cycles


def test_no_skinscan_edge_import_inside_a_function():
    """Function-level imports are kept for heavy third-party libraries only (TensorFlow, onnxruntime,
    LiteRT, tf2onnx, MediaPipe, matplotlib...): an internal one would only hide a cycle."""
    found = []
    for p in PACKAGE.rglob("*.py"):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("skinscan_edge")):
                        found.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert found == [], found


#: Third-party modules the package imports at its top; loaded once before the forks, so that each
#: child pays only for skinscan_edge's own modules.
PRELOAD = ("numpy", "pydantic", "typer", "rich", "click", "jinja2", "platformdirs", "xxhash")

CHILDREN = """
import importlib, os, sys
for name in {preload!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not [m for m in sys.modules if m.startswith("skinscan_edge")]
failed = []
for module in {modules!r}:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException as e:
            print(f"{{module}}: {{type(e).__name__}}: {{e}}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(module)
print("FAILED", failed)
"""


def test_every_module_imports_on_its_own():
    """Each module first in a fresh interpreter (a fork of one that has imported no skinscan_edge
    module), so an import that works only after another module was loaded fails here."""
    modules = [m for m in _modules() if m != "skinscan_edge.__main__"]  # __main__ runs the CLI
    code = CHILDREN.format(preload=PRELOAD, modules=modules)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=scaled_timeout(600), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "FAILED []" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(modules) > 80


@pytest.mark.parametrize("package", ["core", "data", "training", "runtimes", "exporters", "evaluation", "benchmark",
                                     "release", "report"])
def test_each_package_says_what_it_owns_and_may_import(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text(encoding="utf-8")))
    assert doc and "May import" in doc, package
