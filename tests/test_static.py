"""The package's own checks: ruff finds nothing, mypy accepts the type hints that `py.typed`
promises to users' type checkers, and import-linter finds the layers of docs/ARCHITECTURE.md
kept and no import circle (the contracts are in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


@pytest.mark.parametrize("tool", [[sys.executable, "-m", "ruff", "check", "."],
                                  [sys.executable, "-m", "mypy"],
                                  [LINT_IMPORTS, "--no-cache"]],
                         ids=["ruff", "mypy", "import-linter"])
def test_the_code_passes(tool: list[str]) -> None:
    done = subprocess.run(tool, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
