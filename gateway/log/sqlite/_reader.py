"""The offline reader of the SQLite log: the read side of the log on a read-only connection to
the file, for the commands that read it with the daemon up or down."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from gateway.components import Record
from gateway.errors import LogUnavailableError
from gateway.log import DeadLetter, InventoryRow, LogBooks
from gateway.log.sqlite import _dead_letters, _inventory, _reads
from gateway.log.sqlite._schema import DB_NAME, connect_read_only, reading

T = TypeVar("T")


class SQLiteReader:
    """:class:`gateway.log.LogReader` on the file alone, read-only (another process may be
    writing it). Build it with :func:`open_sqlite_reader`.

    Error handling:
        Every method raises :class:`~gateway.errors.LogUnreadableError` when SQLite cannot
        read the file (a corrupt or foreign one).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = trio.CapacityLimiter(1)

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        return await self._query(_reads.read_records, after_seq, max_records, max_bytes)

    async def cursors(self) -> dict[str, tuple[int, int]]:
        return await self._query(_reads.cursor_positions)

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        def query(conn: sqlite3.Connection) -> tuple[int, int]:
            return _reads.seq_range(conn, since_ms, until_ms, _reads.head_seq(conn))

        return await self._query(query)

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await self._query(_dead_letters.list_dead_letters, destination, limit)

    async def load_inventory(self) -> list[InventoryRow]:
        return await self._query(_inventory.inventory_rows, None)

    async def books(self, since_ms: int | None = None) -> LogBooks:
        return await self._query(_reads.books, since_ms)

    async def _query(self, query: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(reading(query), self._conn, *args, limiter=self._lock)


@asynccontextmanager
async def open_sqlite_reader(data_dir: Path) -> AsyncIterator[SQLiteReader]:
    """A read-only view of the log in ``data_dir`` (with the daemon up or down).

    Raises:
        LogUnavailableError: there is no log there. Saying "nothing to report" instead would pass
            off a wrong data_dir (a relative one, run from another folder) as a clean bill.
    """
    path = Path(data_dir) / DB_NAME
    if not path.is_file():
        raise LogUnavailableError(
            "missing", f"no log at {path}: the gateway has not run with this data_dir, or the config points elsewhere"
        )
    conn = connect_read_only(path)
    try:
        yield SQLiteReader(conn)
    finally:
        conn.close()
