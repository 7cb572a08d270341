"""The plugin boundary: ``gateway.__all__`` is the whole plugin API. Built-in plugins (their code
and their tests) import from ``gateway`` only names in ``__all__``, and nothing from a
submodule of ``gateway`` except ``gateway.testing`` in tests; so they are no more privileged
than a third-party plugin, and the core can move its internals freely."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway
import gateway.testing

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FILES = sorted(
    path
    for path in (ROOT / "plugins").rglob("*.py")
    if not {"build", ".venv", "node_modules"} & set(path.parts) and "egg-info" not in str(path)
)
OUT_OF_TREE = sorted((ROOT / "tests" / "third_party_plugin").rglob("*.py")) + sorted(
    (ROOT / "tests" / "third_party_source").rglob("*.py")
)


def gateway_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of ``gateway`` or a submodule in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway" or node.module.startswith("gateway."):
                found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "gateway" or alias.name.startswith("gateway."):
                    found.append((node.lineno, alias.name, []))
    return found


def test_there_are_plugins_to_check() -> None:
    assert len(PLUGIN_FILES) > 40
    assert OUT_OF_TREE


@pytest.mark.parametrize("path", PLUGIN_FILES + OUT_OF_TREE, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_only_the_public_api(path: Path) -> None:
    # A plugin's tests, and a testing kit it ships for others (``testing.py``), may build on gateway.testing.
    is_test = "tests" in path.relative_to(ROOT).parts or path.name == "testing.py"
    problems = []
    for line, module, names in gateway_imports(path):
        if module == "gateway":
            outside = [name for name in names if name not in gateway.__all__]
            if outside:
                problems.append(f"line {line}: {', '.join(outside)} not in gateway.__all__")
        elif module == "gateway.testing" and is_test:
            outside = [name for name in names if name not in gateway.testing.__all__]
            if outside:
                problems.append(f"line {line}: {', '.join(outside)} not in gateway.testing.__all__")
        else:
            problems.append(f"line {line}: imports {module} (internal: use `from gateway import ...`)")
    assert not problems, "\n".join(problems)


def test_every_public_name_exists_and_is_documented() -> None:
    for name in gateway.__all__:
        value = getattr(gateway, name)
        if name.startswith("__") or name == "CALL_TYPES":
            continue
        assert getattr(value, "__doc__", None), f"gateway.{name} has no docstring"
    assert sorted(gateway.__all__) == sorted(set(gateway.__all__))
    for name in gateway.testing.__all__:
        assert getattr(gateway.testing, name).__doc__, f"gateway.testing.{name} has no docstring"
