"""SQL that every SQL engine's loader shares: quoting, table creation, the ``latest`` merge.

The statements are plain ANSI SQL that PostgreSQL and DuckDB both run; a loader for another
engine can use them as they are or as a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["create_table", "merge_latest", "qualified", "quote"]


def quote(name: str) -> str:
    """``name`` as a quoted identifier (names are already snake case; quoting keeps reserved
    words and the engine's case folding out of the way)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def create_table(schema: str, table: str, columns: Mapping[str, str]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with ``columns`` (name -> the engine's type)."""
    body = ", ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {qualified(schema, table)} ({body})"


def merge_latest(target: str, stage: str, merged: str, written: Sequence[str], every: Sequence[str]) -> list[str]:
    """Statements that merge the rows of ``stage`` (one per ``id``) into ``target`` keeping, per
    column, the newest non-null value by ``received_at`` (``users``, ``accounts``): build the
    merged rows into ``merged`` (a temporary table the caller drops), delete the old rows,
    insert the merged ones. ``written``: the stage's columns; ``every``: the target's."""
    newer = "(t.id IS NULL OR t.received_at IS NULL OR s.received_at >= t.received_at)"
    selects = []
    for column in every:
        c = quote(column)
        if column == "id":
            selects.append(f"s.{c} AS {c}")
        elif column not in written:
            selects.append(f"t.{c} AS {c}")
        elif column == "received_at":
            selects.append(f"CASE WHEN {newer} THEN s.{c} ELSE t.{c} END AS {c}")
        else:
            selects.append(f"CASE WHEN {newer} THEN COALESCE(s.{c}, t.{c}) ELSE COALESCE(t.{c}, s.{c}) END AS {c}")
    names = ", ".join(quote(column) for column in every)
    return [
        f"CREATE TEMPORARY TABLE {merged} AS SELECT {', '.join(selects)} "
        f"FROM {stage} AS s LEFT JOIN {target} AS t ON t.id = s.id",
        f"DELETE FROM {target} WHERE id IN (SELECT id FROM {stage})",
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {merged}",
    ]
