"""SQL that every SQL engine's loader shares: quoting, table creation, the ``latest`` merge.

The statements are plain ANSI SQL that PostgreSQL and DuckDB both run; a loader for another
engine can use them as they are or as a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "WATERMARKS",
    "create_table",
    "create_watermarks",
    "merge_latest",
    "qualified",
    "quote",
    "raise_watermark",
    "select_watermark",
]

#: The table, in each schema a destination loads, of each destination's load watermark: the
#: highest log position whose rows it loaded into the schema, raised in the same transaction as
#: the rows. A batch wholly above it was never loaded there by this destination, so its rows
#: can go straight in without the delete by key; a retry, a replay or a batch loaded before a
#: crash lost its acknowledgement is at or below it, and replaces its rows by key as before.
WATERMARKS = "_gateway_loads"


def quote(name: str) -> str:
    """``name`` as a quoted identifier (names are already snake case; quoting keeps reserved
    words and the engine's case folding out of the way)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str, catalog: str = "") -> str:
    """The table's quoted name; with its ``catalog`` (database) when given: DuckDB names a
    file's catalog after the file and has catalogs ``temp`` and ``system``, so a schema named
    as one of them is ambiguous unless the catalog is named too."""
    name = f"{quote(schema)}.{quote(table)}"
    return f"{quote(catalog)}.{name}" if catalog else name


def create_table(schema: str, table: str, columns: Mapping[str, str], catalog: str = "") -> str:
    """``CREATE TABLE IF NOT EXISTS`` with ``columns`` (name -> the engine's type)."""
    body = ", ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {qualified(schema, table, catalog)} ({body})"


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


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_watermarks(schema: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the schema's :data:`WATERMARKS` table."""
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, WATERMARKS)} "
        "(destination TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)"
    )


def select_watermark(schema: str, destination: str) -> str:
    """The ``last_seq`` of ``destination`` in the schema (no row: it never loaded there)."""
    return f"SELECT last_seq FROM {qualified(schema, WATERMARKS)} WHERE destination = {_literal(destination)}"


def raise_watermark(schema: str, destination: str, last_seq: int) -> str:
    """Set the watermark of ``destination`` to ``last_seq`` unless it is higher already (loads
    may commit out of log order: a batch retried after a later one was loaded)."""
    return (
        f"INSERT INTO {qualified(schema, WATERMARKS)} AS w (destination, last_seq) "
        f"VALUES ({_literal(destination)}, {int(last_seq)}) "
        "ON CONFLICT (destination) DO UPDATE SET last_seq = greatest(w.last_seq, excluded.last_seq)"
    )
