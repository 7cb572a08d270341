"""The SQLite log's bulk writer: many messages at once into a log no gateway has open (loading
an archive, filling a log for a benchmark), through the same dedup slices as live appends.

It holds the data_dir lock, so it never runs beside a gateway. Rows come with their own
``received_at`` in arrival order; the keys of the ones still inside the dedup window (as of the
clock's ``now`` at the start) go into the slices, sorted, so a batch of random keys writes each
slice page once instead of once per key. Rows older than the window get no key: no live append
could be their duplicate any more.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from itertools import groupby, islice
from pathlib import Path

from gateway.config import LogConfig
from gateway.log import Clock, wall_clock_ms
from gateway.log.sqlite._dedup import DedupSlices
from gateway.log.sqlite._open import lock_data_dir
from gateway.log.sqlite._reads import head_seq
from gateway.log.sqlite._rows import chunks, insert_statements
from gateway.log.sqlite._schema import DB_NAME, connect, create_schema, transaction

#: A bulk row: source, message_id, received_at (ms), body.
BulkRow = tuple[str, str, int, bytes]

#: Rows per transaction: large, so the commits' cost vanishes; small enough for a bounded WAL.
BULK_TRANSACTION_ROWS = 100_000
_KEY_CHUNK = 128
_INSERT = insert_statements("INSERT INTO messages (source, message_id, received_at, body)", 4)


def bulk_load(config: LogConfig, data_dir: Path, rows: Iterable[BulkRow], *, clock_ms: Clock = wall_clock_ms) -> int:
    """Append ``rows`` (``received_at`` never decreasing) to the log in ``data_dir``, skipping
    duplicates within the dedup window as appends do. Returns how many were stored. Not a
    substitute for the gateway's appends: nothing is durable until it returns (``synchronous =
    NORMAL``, one commit per :data:`BULK_TRANSACTION_ROWS` rows), and the sources' books are
    not written.

    Raises:
        gateway.errors.LogUnavailableError: a gateway holds the data_dir.
        ValueError: a row's received_at is earlier than the previous row's.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(data_dir)
    try:
        conn = connect(data_dir / DB_NAME, "normal", cache_kib=256 * 1024, wal_limit=64 * 1024 * 1024)
        try:
            conn.execute("PRAGMA wal_autocheckpoint = 16384")
            now = clock_ms()
            window_ms = config.dedup_window_secs * 1000
            create_schema(conn, now, window_ms)
            dedup = DedupSlices(conn)
            dedup.flush_all(conn, head_seq(conn), now, window_ms)  # what a gateway left in memory
            dedup.cover(conn, now, window_ms)  # a window longer than the gateway's
            writer = _BulkWriter(conn, dedup, window_ms, window_start=now - window_ms)
            stored = 0
            last_at = conn.execute("SELECT coalesce(max(received_at), 0) FROM messages").fetchone()[0]
            batches = iter(rows)
            while batch := list(islice(batches, BULK_TRANSACTION_ROWS)):
                for row in batch:
                    if row[2] < last_at:
                        raise ValueError(f"received_at goes back from {last_at} to {row[2]} (message {row[1]!r})")
                    last_at = row[2]
                with transaction(conn):
                    stored += writer.write(batch)
                    # Rows before the window have no key, and need none (unless it grows).
                    dedup.mark_flushed(conn, head_seq(conn))
                    dedup.keys_missing_before(conn, writer.window_start)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return stored
        finally:
            conn.close()
    finally:
        os.close(lock)


class _BulkWriter:
    """Writes one transaction's rows: their keys slice by slice (sorted by key), then the new
    rows in arrival order."""

    def __init__(self, conn: sqlite3.Connection, dedup: DedupSlices, window_ms: int, *, window_start: int) -> None:
        self._conn = conn
        self._dedup = dedup
        self._window_ms = window_ms
        self.window_start = window_start

    def write(self, batch: list[BulkRow]) -> int:
        cur = self._conn.cursor()
        keep = [True] * len(batch)
        for in_window, part in groupby(range(len(batch)), key=lambda i: self._into_slice(batch[i][2])):
            if not in_window:
                continue
            ordered = sorted(part, key=lambda i: (batch[i][0], batch[i][1]))
            for source, same_source in groupby(ordered, key=lambda i: batch[i][0]):
                members = list(same_source)
                for start in range(0, len(members), _KEY_CHUNK):
                    chunk = sorted(members[start : start + _KEY_CHUNK])  # back in arrival order
                    keys = [(batch[i][1], batch[i][2]) for i in chunk]
                    new = self._dedup.write_direct(cur, source, keys, self._window_ms)
                    for i in chunk:
                        if batch[i][1] in new:
                            new.discard(batch[i][1])  # a second copy in the chunk is a duplicate
                        else:
                            keep[i] = False
        fresh = [row for row, kept in zip(batch, keep, strict=True) if kept]
        for piece in chunks(fresh):
            cur.execute(_INSERT[len(piece)], [value for row in piece for value in row])
        return len(fresh)

    def _into_slice(self, received_at: int) -> bool:
        """Whether a key received at ``received_at`` goes into the newest slice (opened as time
        goes on); False for the rows before the window, which get no key."""
        if received_at < self.window_start:
            return False
        if self._dedup.slice_due(received_at):
            self._dedup.open_slice(self._conn, received_at, self._window_ms)
        return True
