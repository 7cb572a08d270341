"""Stored data is read and written only behind the log's protocol: nothing in gateway/ outside
gateway/log/ imports sqlite3, runs SQL, or names a log engine (callers use gateway.log's
open_log and open_log_reader, so another engine needs no change outside gateway/log/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent
ENGINES = ("gateway.log.sqlite", "gateway.log.memory")
# Statements as code writes them (upper case), not the words in prose.
SQL = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+(TABLE|INDEX)|PRAGMA\s+\w+)",
    re.S,
)
EXECUTE = {"execute", "executemany", "executescript"}


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def violations(source: str, name: str) -> list[str]:
    """What in ``source`` (the module ``name``) reaches past the log's protocol."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=name)):
        line = getattr(node, "lineno", 0)
        modules = _imported(node)
        if any(m == "sqlite3" or m.startswith("sqlite3.") for m in modules):
            found.append((line, "imports sqlite3"))
        engines = [m for m in modules if any(m == e or m.startswith(e + ".") for e in ENGINES)]
        if engines:
            found.append((line, f"names a log engine ({engines[0]})"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EXECUTE:
            found.append((line, f"runs a statement (.{node.func.attr})"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            found.append((line, f"holds SQL ({node.value.strip()[:40]!r})"))
    return [f"{name}:{line}: {problem}" for line, problem in sorted(found)]


def test_no_sqlite_or_sql_outside_the_log_package() -> None:
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if PACKAGE / "log" not in p.parents]
    assert len(modules) > 20  # the walk found the package
    found = [v for path in modules for v in violations(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "stored data is read and written only through gateway.log:\n" + "\n".join(found)


def test_the_check_sees_what_it_forbids() -> None:
    code = (
        "import sqlite3\n"
        "from gateway.log.sqlite import open_sqlite_log\n"
        "def books(conn):\n"
        "    return conn.execute('SELECT count(*) FROM messages WHERE seq > ?', (1,))\n"
    )
    assert violations(code, "gateway/ops/sample.py") == [
        "gateway/ops/sample.py:1: imports sqlite3",
        "gateway/ops/sample.py:2: names a log engine (gateway.log.sqlite)",
        "gateway/ops/sample.py:4: holds SQL ('SELECT count(*) FROM messages WHERE seq ')",
        "gateway/ops/sample.py:4: runs a statement (.execute)",
    ]
