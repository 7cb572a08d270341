"""The code checks, in the suite so that `.ci/run` and the README's test command run them: the
layering contracts (import-linter, configured in pyproject.toml), the type check of gateway/
(mypy --strict) and the lint (ruff: rules and formatting) of everything we write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: What ruff checks: the core, the plugins, the tests and the benchmarks.
LINTED = ["gateway", "plugins", "tests", "bench"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_layering_contracts_hold() -> None:
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "command",
    [["check", *LINTED], ["format", "--check", *LINTED]],
    ids=["rules", "format"],
)
def test_ruff_finds_nothing(command: list[str]) -> None:
    result = run(str(BIN / "ruff"), *command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_core_type_checks_strictly() -> None:
    result = run(str(BIN / "mypy"), "--no-incremental")
    assert result.returncode == 0, result.stdout + result.stderr
