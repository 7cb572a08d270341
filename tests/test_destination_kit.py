"""The destination kit: ``gateway new-plugin`` writes distributions whose tests pass as
generated, and the shipped destinations (and what the scaffold writes) use only the public
plugin API: names in ``gateway.__all__``, and ``gateway.testing`` in tests."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
from gateway.cli import main
from gateway.kit.scaffold import KINDS, new_plugin

ROOT = Path(__file__).resolve().parent.parent
DESTINATIONS = ("segment", "mixpanel", "amplitude", "ga4", "posthog")


@pytest.mark.parametrize("kind", KINDS)
def test_a_generated_plugin_passes_its_own_tests(kind: str, tmp_path: Path) -> None:
    folder = new_plugin(kind, f"acme_{kind}", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        f"gateway_{kind}_acme_{kind}",
        "pyproject.toml",
        "tests",
    ]
    assert f'acme_{kind} = "gateway_{kind}_acme_{kind}"' in (folder / "pyproject.toml").read_text()
    env = {**os.environ, "PYTHONPATH": str(folder)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
    assert_public_imports(folder)


def test_new_plugin_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "destination", "crm", "--into", str(tmp_path)]) == 0
    assert "gateway-destination-crm" in capsys.readouterr().out
    assert (tmp_path / "gateway-destination-crm" / "gateway_destination_crm" / "__init__.py").exists()
    assert main(["new-plugin", "destination", "crm", "--into", str(tmp_path)]) == 2  # exists already
    assert main(["new-plugin", "destination", "Bad-Name", "--into", str(tmp_path)]) == 2
    assert "snake_case" in capsys.readouterr().err


def assert_public_imports(folder: Path) -> None:
    public = set(gateway.__all__)
    for path in folder.rglob("*.py"):
        in_tests = "tests" in path.relative_to(folder).parts
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gateway":
                if node.module == "gateway":
                    private = {alias.name for alias in node.names} - public
                    assert not private, f"{path}: imports {private}, not in gateway.__all__"
                else:
                    assert in_tests and node.module == "gateway.testing", f"{path}: imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("gateway."):
                        assert in_tests and alias.name == "gateway.testing", f"{path}: imports {alias.name}"


@pytest.mark.parametrize("name", DESTINATIONS)
def test_destinations_use_only_the_public_api(name: str) -> None:
    folder = ROOT / "plugins" / f"gateway-destination-{name}"
    assert f'{name} = "gateway_destination_{name}"' in (folder / "pyproject.toml").read_text()
    assert (folder / "README.md").exists() and list((folder / "tests").glob("test_*.py"))
    assert_public_imports(folder)
