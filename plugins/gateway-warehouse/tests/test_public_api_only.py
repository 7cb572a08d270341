"""The warehouse distributions use only the gateway's public API: names in ``gateway.__all__``
(and ``gateway.testing`` in their test kits), never ``gateway.<submodule>`` internals."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

PLUGINS = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = [
    "gateway-warehouse",
    "gateway-destination-duckdb",
    "gateway-destination-postgres",
    "gateway-destination-parquet",
]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def test_modules_import_only_public_gateway_names() -> None:
    problems = []
    checked = 0
    for distribution in DISTRIBUTIONS:
        for path in sorted((PLUGINS / distribution).glob("gateway_*/*.py")):
            checked += 1
            for module, names in imports(path):
                if module == "gateway":
                    problems += [f"{path.name}: gateway.{n} is not public" for n in names if n not in gateway.__all__]
                elif module.startswith("gateway.") and not (module == "gateway.testing" and path.name == "testing.py"):
                    problems.append(f"{path.relative_to(PLUGINS)}: imports {module}")
    assert checked >= 8
    assert not problems, problems
