"""The privacy field inventory in the SQLite log: the field paths each source sent (never their
values), saved by the daemon and read by it and by ``gateway privacy inventory``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from gateway.log import InventoryRow
from gateway.log.sqlite._schema import transaction

_UPSERT_INVENTORY = """
INSERT INTO privacy_inventory (source, path, class, hits, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (source, path) DO UPDATE SET class = excluded.class, hits = excluded.hits,
    first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen)
"""


def save_inventory(conn: sqlite3.Connection, rows: Sequence[InventoryRow]) -> None:
    """Insert or update ``rows`` in one transaction (first_seen keeps the earliest)."""
    data = [(r.source, r.path, r.cls, msgspec.json.encode(r.hits).decode(), r.first_seen, r.last_seen) for r in rows]
    with transaction(conn):
        conn.executemany(_UPSERT_INVENTORY, data)


def inventory_rows(conn: sqlite3.Connection, source: str | None = None) -> list[InventoryRow]:
    """Every inventory row (of one ``source``), by source and path."""
    sql = "SELECT source, path, class, hits, first_seen, last_seen FROM privacy_inventory"
    args: tuple[object, ...] = ()
    if source is not None:
        sql += " WHERE source = ?"
        args = (source,)
    try:
        rows = conn.execute(sql + " ORDER BY source, path", args).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []  # a log file from before the inventory existed
        raise
    return [
        InventoryRow(source=s, path=p, cls=c, hits=tuple(msgspec.json.decode(h)), first_seen=f, last_seen=last)
        for s, p, c, h, f, last in rows
    ]
