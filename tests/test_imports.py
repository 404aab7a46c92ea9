"""The library's import structure: pyproject.toml's import-linter contracts (layers, no cycle, nothing of
experiments) hold, and each of them fails on a copy of the code with one bad import added."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis.config import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the contracts in ``root``/pyproject.toml, reading ``root``'s cnnvis and experiments."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def broken_contracts(report: str) -> list[str]:
    return [line.removesuffix(" BROKEN") for line in report.splitlines() if line.endswith(" BROKEN")]


def imports_by_name(package: Path) -> list[str]:
    """``file:line`` of each ``import_module`` / ``__import__`` of a name not starting with ``cnnvis.``: import-linter
    reads import statements only, so a module imported by name (``experiments.<name>``) would pass it unseen."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if not isinstance(node, ast.Call) or getattr(func, "id", getattr(func, "attr", None)) not in (
                    "import_module", "__import__"):
                continue
            name = node.args[0] if node.args else None
            start = name.values[0] if isinstance(name, ast.JoinedStr) and name.values else name
            if not (isinstance(start, ast.Constant) and str(start.value).startswith("cnnvis.")):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    return found


def test_the_library_keeps_its_import_contracts():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert imports_by_name(REPO / "src" / "cnnvis") == []


@pytest.mark.parametrize("module, added, broken", [
    ("incremental.py", "from cnnvis import occlusion", "no import cycle among cnnvis's modules"),  # within a layer
    ("notes.py", "from cnnvis import scoreboard", "cnnvis imports run downward through its layers"),  # upward, no cycle: scoreboard does not reach notes
    ("data.py", "from experiments import experiment_names", "the library imports nothing of experiments"),
    ("models/weights.py", "from cnnvis.models.zf_alexnet import zfnet",
     "cnnvis.models imports run downward through its modules"),
    ("training/splits.py", "from cnnvis.training.loop import fit",
     "cnnvis.training imports run downward through its modules"),
])
def test_a_cycle_an_upward_import_or_an_experiments_import_breaks_a_contract(tmp_path, module, added, broken):
    for tree in ("src/cnnvis", "experiments"):
        shutil.copytree(REPO / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "src" / "cnnvis" / module, "a") as f:
        f.write(f"\n{added}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken_contracts(result.stdout) == [broken], result.stdout


def test_an_import_of_experiments_by_name_is_found(tmp_path):
    (tmp_path / "runner.py").write_text('import importlib\n\n'
                                        'main = importlib.import_module(f"experiments.{name}").main\n'
                                        'models = importlib.import_module(f"cnnvis.{name}")\n')
    assert imports_by_name(tmp_path) == ["runner.py:3"]
