"""The SQLite log's tables and connections: the schema, its in-place upgrade, how connections are
opened, and :func:`transaction`, the one way to write; plus the statements several parts share."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from gateway.errors import LogUnavailableError, LogUnreadableError
from gateway.log.sqlite._dedup import SLICES_SCHEMA, migrate_unique_index

P = ParamSpec("P")
T = TypeVar("T")

DB_NAME = "log.sqlite3"
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- seq is the rowid: a new row gets max(seq) + 1. The newest row is therefore never deleted (see
-- purge), so a seq is never reused and a cursor can never point past a message that arrives
-- later. The dedup keys live in the dedup slices (_dedup.py), for the dedup window only; schema 1
-- had a unique index on (source, message_id) here, over the whole archive.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
-- start_seq: the head when the destination was added; it is responsible for every seq after.
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    start_seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- What happened to the messages a cursor moved over, written in the same transaction as the
-- cursor: the audit reads these, so a crash can never leave the books and the cursor apart.
CREATE TABLE IF NOT EXISTS delivery_outcomes (
    destination TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    upto_seq INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_outcomes_by_destination ON delivery_outcomes (destination, upto_seq);
-- state: 'dead' (held for an operator) or 'redrive' (the destination's worker sends it again).
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    body BLOB NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead',
    stage TEXT NOT NULL DEFAULT 'send'
);
CREATE INDEX IF NOT EXISTS dead_letters_by_destination ON dead_letters (destination, state, id);
-- userIds whose later events are dropped at ingest (GDPR/CCPA suppression requests).
CREATE TABLE IF NOT EXISTS suppressions (
    user_id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
-- Deletion requests carried out (GDPR/CCPA), with what they removed from the log.
CREATE TABLE IF NOT EXISTS deletion_requests (
    user_id TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    messages_deleted INTEGER NOT NULL,
    tombstoned INTEGER NOT NULL DEFAULT 0,
    dead_letters_deleted INTEGER NOT NULL DEFAULT 0
);
-- Seqs of messages a deletion request removed, so that a destination added later to replay
-- the archive (start_at) books them as filtered:deleted. Purged along with the rows below them.
CREATE TABLE IF NOT EXISTS deleted_seqs (
    seq INTEGER PRIMARY KEY,
    source TEXT NOT NULL
);
-- Each source's books, per hour: what became of the messages it received (stored, duplicates,
-- filtered:<reason>, dead_lettered, suppressed), written in the same transaction as the
-- messages themselves, so they are exact across crashes.
CREATE TABLE IF NOT EXISTS source_outcomes (
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    hour INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (source, outcome, hour)
) WITHOUT ROWID;
-- The field paths each source sent (never their values): most severe class seen, the
-- matchers that recognised them (a JSON array of names), first and last seen.
CREATE TABLE IF NOT EXISTS privacy_inventory (
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    class TEXT NOT NULL,
    hits TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (source, path)
);
-- The console's per-minute series (a destination's deliveries, errors, latency bins...):
-- counters that add up, kept SERIES_KEEP_MS; and the latest sample of each kind per series.
CREATE TABLE IF NOT EXISTS series_counts (
    series TEXT NOT NULL,
    minute INTEGER NOT NULL,
    metric TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (series, minute, metric)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_counts_by_minute ON series_counts (minute);
CREATE TABLE IF NOT EXISTS series_samples (
    series TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (series, kind)
) WITHOUT ROWID;
"""

SET_CURSOR = """
INSERT INTO cursors (destination, seq, start_seq, updated_at) VALUES (?1, ?2, ?2, ?3)
ON CONFLICT (destination) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
"""
ADD_SOURCE_OUTCOME = (
    "INSERT INTO source_outcomes (source, outcome, hour, count) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (source, outcome, hour) DO UPDATE SET count = count + excluded.count"
)
ADD_DEAD_LETTER = (
    "INSERT INTO dead_letters (destination, seq, source, body, error, attempts, failed_at, stage)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
ADD_OUTCOME = (
    "INSERT INTO delivery_outcomes (destination, source, outcome, count, upto_seq, at) VALUES (?, ?, ?, ?, ?, ?)"
)


def create_schema(conn: sqlite3.Connection, now: int, dedup_window_ms: int) -> None:
    """Create the tables that are missing and bring older ones up to this schema (the dedup
    keys of a schema 1 log move to a dedup slice, as of ``now``)."""
    conn.executescript(_SCHEMA + SLICES_SCHEMA)
    upgrade(conn)
    migrate_unique_index(conn, now, dedup_window_ms)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )


def probe(conn: sqlite3.Connection, now: int) -> None:
    """A small write that goes through only if the log takes writes again."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('probed_at', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(now),),
        )


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a log written by an earlier version up to this schema (additions only, so an
    older gateway can still read it; the move to dedup slices is not, see _dedup.py)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
    if "stage" not in columns:
        conn.execute("ALTER TABLE dead_letters ADD COLUMN stage TEXT NOT NULL DEFAULT 'send'")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction around the block. The connections run in autocommit mode
    (``isolation_level=None``), where ``with conn:`` opens no transaction: each statement in it
    would commit (and fsync) on its own, and a crash could keep half of the block."""
    if conn.in_transaction:  # a ROLLBACK that failed earlier: without this, no write would work again
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(path: Path, synchronous: str, cache_kib: int, wal_limit: int) -> sqlite3.Connection:
    """A read-write connection of the engine, in autocommit mode (see :func:`transaction`)."""
    # check_same_thread=False: each connection is used by one trio worker thread at a time,
    # serialised by its own CapacityLimiter(1).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {wal_limit}")
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    return conn


def connect_read_only(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection that can only read ``path`` (another process may be writing it)."""
    return sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )


def unavailable(error: sqlite3.Error) -> LogUnavailableError:
    """What a failed write means for the caller (the HTTP layer answers 503 with it)."""
    text = str(error)
    if "full" in text:
        return LogUnavailableError("disk_full", f"the disk holding the log is full ({text})")
    if "locked" in text or "busy" in text:
        return LogUnavailableError("busy", f"the log is locked by another process ({text})")
    return LogUnavailableError("log_error", f"the log cannot be written ({text})")


def reading(query: Callable[P, T]) -> Callable[P, T]:
    """``query``, with SQLite's errors raised as :class:`~gateway.errors.LogUnreadableError`."""

    @functools.wraps(query)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return query(*args, **kwargs)
        except sqlite3.Error as error:
            raise LogUnreadableError(str(error)) from error

    return run


def writing(write: Callable[P, T]) -> Callable[P, T]:
    """``write``, with SQLite's errors raised as :class:`~gateway.errors.LogUnavailableError`."""

    @functools.wraps(write)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return write(*args, **kwargs)
        except sqlite3.Error as error:
            raise unavailable(error) from error

    return run
