"""The import layers of ``pyproject.toml`` (``lint-imports``) hold, and an import that
goes against them is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Check the ``jobqueue`` package found under ``root`` against ``root/pyproject.toml``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )


def add_function(path: Path, import_line: str) -> None:
    """Append a function that imports inside its body, the kind of import easiest to miss."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"\n\ndef _probe():\n    {import_line}\n\n    return None\n")


def test_the_package_keeps_its_layers():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_import_against_the_layers_is_caught(tmp_path):
    shutil.copytree(REPO_ROOT / "jobqueue", tmp_path / "jobqueue", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    add_function(tmp_path / "jobqueue" / "engine" / "keys.py", "from ..models import Job")
    add_function(tmp_path / "jobqueue" / "cron.py", "from .worker import maintenance")

    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept, 2 broken." in result.stdout
    assert "jobqueue.engine is not allowed to import jobqueue.models" in result.stdout
    assert "jobqueue.engine.keys -> jobqueue.models" in result.stdout
    assert "jobqueue.cron -> jobqueue.worker.maintenance" in result.stdout
