"""The SQLite log's dedup keys, kept for the dedup window only: one WITHOUT ROWID table per slice
of time, written in the transaction of the messages, and dropped whole once the window has
passed it.

A key ``(source, message_id)`` is a duplicate while its earlier copy was received at most
``dedup_window_secs`` ago (and was not deleted by a deletion request). The keys live apart from
the messages, so the messages table needs no unique index: a random (UUIDv4) key costs an insert
into the current slice, a quarter of the window, and a lookup in each older slice still in the
window, instead of an insert at a random page of an index as large as the archive.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The window is covered by this many slices (plus the current one, partly filled): the keys
#: kept are at most 1 + 1/SLICES_PER_WINDOW windows' worth, and a key is looked up in at most
#: SLICES_PER_WINDOW + 1 tables.
SLICES_PER_WINDOW = 4

SLICES_SCHEMA = """
-- Every dedup slice: its table holds the keys received in [start_ms, end_ms).
CREATE TABLE IF NOT EXISTS dedup_slices (
    name TEXT PRIMARY KEY,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL
);
"""

_SLICE_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, message_id)
) WITHOUT ROWID
"""


@dataclass(frozen=True, slots=True)
class Slice:
    """One slice's table and the times its keys were received in: ``[start_ms, end_ms)``."""

    name: str
    start_ms: int
    end_ms: int


def _store_sql(name: str, rows: int) -> str:
    # A key whose earlier copy is past the window takes its place (and counts as stored).
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        f"INSERT INTO {name} (source, message_id, received_at) VALUES {values} "
        "ON CONFLICT (source, message_id) DO UPDATE SET received_at = excluded.received_at "
        "WHERE received_at < excluded.received_at - ? RETURNING message_id"
    )


def _seen_sql(name: str, rows: int) -> str:
    marks = ", ".join(["?"] * rows)
    return (
        f"SELECT message_id, received_at FROM {name} WHERE source = ? AND message_id IN ({marks}) AND received_at >= ?"
    )


class DedupSlices:
    """The slices of one log file, in time order; used on the writer connection only (commits,
    purges and deletions, one at a time under its limiter)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._slices = [
            Slice(name, start, end)
            for name, start, end in conn.execute("SELECT name, start_ms, end_ms FROM dedup_slices ORDER BY start_ms")
        ]
        self._sql: dict[tuple[str, str, int], str] = {}

    @property
    def slices(self) -> Sequence[Slice]:
        return tuple(self._slices)

    def current(self, conn: sqlite3.Connection, now: int, window_ms: int) -> Slice:
        """The slice keys received at ``now`` go to, created (and committed on its own: an
        empty slice is harmless) when the newest one has ended."""
        if self._slices and now < self._slices[-1].end_ms:
            return self._slices[-1]
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = self.open_slice(conn, now, window_ms)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._slices = [each for each in self._slices if each.start_ms != now]
            raise
        return new

    def open_slice(self, conn: sqlite3.Connection, now: int, window_ms: int) -> Slice:
        """Start a slice at ``now``, in the caller's transaction (the bulk writer's)."""
        new = Slice(f"dedup_keys_{now}", now, now + max(window_ms // SLICES_PER_WINDOW, 1))
        conn.execute(_SLICE_TABLE.format(name=new.name))
        conn.execute(
            "INSERT OR IGNORE INTO dedup_slices (name, start_ms, end_ms) VALUES (?, ?, ?)",
            (new.name, new.start_ms, new.end_ms),
        )
        self._slices.append(new)
        return new

    def store_new(self, cur: sqlite3.Cursor, source: str, keys: Sequence[tuple[str, int]], window_ms: int) -> set[str]:
        """Record ``keys`` (message_id, received_at) of one source, inside the caller's
        transaction, and return the message_ids that are new: not seen within the window
        before their received_at. The caller stores the first entry of each id returned, and
        only that one. The current slice is the newest (see :meth:`current`)."""
        first: dict[str, int] = {}
        for message_id, received_at in keys:
            first.setdefault(message_id, received_at)
        cutoff = min(first.values()) - window_ms
        seen: set[str] = set()
        for older in self._slices[:-1]:
            if older.end_ms <= cutoff:  # every key in it is past the window
                continue
            sql = self._statement("seen", older.name, len(first))
            for message_id, received_at in cur.execute(sql, [source, *first, cutoff]):
                if first[message_id] - received_at <= window_ms:
                    seen.add(message_id)
        params: list[object] = []
        for message_id, received_at in first.items():
            if message_id not in seen:
                params += (source, message_id, received_at)
        if not params:
            return set()
        params.append(window_ms)
        sql = self._statement("store", self._slices[-1].name, (len(params) - 1) // 3)
        return {row[0] for row in cur.execute(sql, params)}

    def forget(self, cur: sqlite3.Cursor, keys: Iterable[tuple[str, str, int]]) -> None:
        """Forget the keys of deleted messages, ``(source, message_id, received_at)``: a message
        a deletion request removed may be sent again."""
        rows = list(keys)  # few: every slice is asked (a clock set back files keys out of range)
        for each in self._slices:
            cur.executemany(f"DELETE FROM {each.name} WHERE source = ? AND message_id = ? AND received_at = ?", rows)

    def drop_expired(self, conn: sqlite3.Connection, now: int, window_ms: int) -> int:
        """Drop the slices whose every key is past the window (never the newest); returns how
        many went. One transaction per slice."""
        dropped = 0
        while len(self._slices) > 1 and self._slices[0].end_ms <= now - window_ms:
            gone = self._slices[0]
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"DROP TABLE IF EXISTS {gone.name}")
                conn.execute("DELETE FROM dedup_slices WHERE name = ?", (gone.name,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._slices.pop(0)
            dropped += 1
        return dropped

    def _statement(self, kind: str, name: str, rows: int) -> str:
        key = (kind, name, rows)
        sql = self._sql.get(key)
        if sql is None:
            if len(self._sql) > 512:  # slices come and go
                self._sql.clear()
            sql = self._sql[key] = (_store_sql if kind == "store" else _seen_sql)(name, rows)
        return sql


def migrate_unique_index(conn: sqlite3.Connection, now: int, window_ms: int) -> None:
    """Move a log of schema 1 (a unique index on the messages over the whole archive) to dedup
    slices: the keys received within the window go into one slice, then the index goes."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'messages_by_key'").fetchone()
    if not exists:
        return
    cutoff = now - window_ms
    first = Slice(f"dedup_keys_{cutoff}", cutoff, now + max(window_ms // SLICES_PER_WINDOW, 1))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SLICE_TABLE.format(name=first.name))
        conn.execute(
            "INSERT OR IGNORE INTO dedup_slices (name, start_ms, end_ms) VALUES (?, ?, ?)",
            (first.name, first.start_ms, first.end_ms),
        )
        # The keys are unique in the messages already (that index); received_at grows with seq.
        conn.execute(
            f"INSERT OR IGNORE INTO {first.name} (source, message_id, received_at) "
            "SELECT source, message_id, received_at FROM messages WHERE received_at >= ?",
            (cutoff,),
        )
        conn.execute("DROP INDEX messages_by_key")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
