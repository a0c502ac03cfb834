"""The static checks (ruff lint, ruff format, mypy, the import graph) as part of the test run: README's test
command runs them, and a change that breaks one fails CI like a failing test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CHECKS = {
    "ruff-lint": ["ruff", "check", "."],
    "ruff-format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],
    # the layout: no import cycle, no upward import, every late import with its reason
    "layers": ["python", "tests/import_graph.py"],
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_static_check_passes(name):
    tool = Path(sys.executable).parent / CHECKS[name][0]
    if not tool.is_file():
        pytest.skip(f"{CHECKS[name][0]} is not installed: bash setup.sh --test installs it")
    result = subprocess.run([str(tool), *CHECKS[name][1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"`{' '.join(CHECKS[name])}` failed:\n{result.stdout}{result.stderr}"


def test_check_script_runs_the_same_checks():
    """check.sh (the one local command README names) and this file check the same things."""
    script = (ROOT / "check.sh").read_text()
    for command in CHECKS.values():
        assert " ".join(['"$bin/' + command[0] + '"', *command[1:]]).strip() in script, command
