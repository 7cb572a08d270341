"""The offline reader of the SQLite log: a read-only connection to the file, for the commands that
read it with the daemon up or down."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.errors import LogUnavailableError
from gateway.log import DeadLetter, InventoryRow
from gateway.log.sqlite._dead_letters import list_dead_letters as _list_dead_letters
from gateway.log.sqlite._inventory import inventory_rows
from gateway.log.sqlite._schema import DB_NAME


def open_log_file(data_dir: Path) -> sqlite3.Connection:
    """A read-only connection to the log in ``data_dir``, for the commands that read it straight
    from the file (with the daemon up or down).

    Raises:
        LogUnavailableError: there is no log there. Saying "nothing to report" instead would pass
            off a wrong data_dir (a relative one, run from another folder) as a clean bill.
    """
    path = Path(data_dir) / DB_NAME
    if not path.is_file():
        raise LogUnavailableError(
            "missing", f"no log at {path}: the gateway has not run with this data_dir, or the config points elsewhere"
        )
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_inventory(data_dir: Path, *, source: str | None = None) -> list[InventoryRow]:
    """The privacy field inventory, straight from the log file (read-only; works with the
    daemon up or down)."""
    conn = open_log_file(data_dir)
    try:
        return inventory_rows(conn, source)
    finally:
        conn.close()


def list_dead_letters(data_dir: Path, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Read dead letters straight from the log file (works while the daemon runs)."""
    conn = open_log_file(data_dir)
    try:
        return _list_dead_letters(conn, destination, limit)
    finally:
        conn.close()
