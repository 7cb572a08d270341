"""The embedded ingest log: SQLite in WAL mode, with group commit and exact deduplication.

Requests queue their entries; one committer task writes everything that queued while the previous
commit ran in a single transaction (one fsync), then wakes every request in that group. So the
commit rate adapts to load with no timer pacing it, and a request is answered only once its
entries are durable. The dedup check runs in the same transaction as the insert, so a crash can
never leave a message stored without its dedup key, or the reverse.

Checkpoints and purges run outside the commit path (WAL autocheckpoint is off), since an
automatic checkpoint inside a commit is what pushes commit latency up.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog
import trio

from gateway.components import Record
from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import (
    SEND_STAGE,
    AppendResult,
    BacklogInfo,
    DeadLetter,
    DeletionReport,
    Entry,
    InventoryRow,
    LogStatistics,
    SourceLetter,
)
from gateway.telemetry import ThrottledWarning

log = structlog.get_logger("gateway.log")

DB_NAME = "log.sqlite3"
SCHEMA_VERSION = 1
PURGE_CHUNK = 5000
#: Past this size (or an eighth of ``log.max_disk_bytes`` if less), a checkpoint restarts the
#: WAL and SQLite truncates the file back to it. Passive checkpoints alone never restart it while
#: commits keep coming, so under sustained load it grew by everything written: 660 MB in 25 s of
#: bench/ingest.py batches.
WAL_RESTART_BYTES = 64 * 1024 * 1024
#: A restart waits for every reader to leave the WAL, and commits wait behind it: this long at
#: most. Another process's reader (``gateway audit``, a backup, a sqlite3 shell) can hold it
#: for longer, so after a busy try the restart waits this many seconds, doubling up to the max.
WAL_RESTART_WAIT_MS = 10
WAL_RESTART_BACKOFF_SECS = (30.0, 600.0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- seq is the rowid: a new row gets max(seq) + 1. The newest row is therefore never deleted (see
-- purge), so a seq is never reused and a cursor can never point past a message that arrives
-- later. The unique key is the dedup key: a (source, message_id) is remembered as long as its
-- message is in the log, which purge keeps for at least the dedup window.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_key ON messages (source, message_id);
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
"""

# A duplicate key is skipped by the same statement that would store it, in the same
# transaction: the only way to be exact across concurrent requests and crashes. Rows go in as
# multi-row INSERTs (VALUES rows are inserted in order, so a duplicate inside one statement is
# skipped too): one call into SQLite per chunk instead of per row, so the commit thread takes
# the GIL back once per chunk, not once per row, while the event loop is busy.
# A power of two (chunk sizes are powers of two: a handful of cached statements), and 4 x 128
# parameters stay under 999, the variable limit of SQLite builds before 3.32.
_APPEND_CHUNK = 128


def _append_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO messages (source, message_id, received_at, body) VALUES {values} "
        "ON CONFLICT (source, message_id) DO NOTHING"
    )


_APPEND_SQL = {size: _append_sql(size) for size in (1 << bit for bit in range(_APPEND_CHUNK.bit_length()))}


def _append_chunks(entries: Sequence[Entry]) -> Iterator[Sequence[Entry]]:
    """``entries`` in order, in chunks of ``_APPEND_CHUNK`` and then of decreasing powers of two."""
    start, left = 0, len(entries)
    size = _APPEND_CHUNK
    while left:
        while size > left:
            size >>= 1
        yield entries[start : start + size]
        start += size
        left -= size


_SET_CURSOR = """
INSERT INTO cursors (destination, seq, start_seq, updated_at) VALUES (?1, ?2, ?2, ?3)
ON CONFLICT (destination) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at
"""
_ADD_SOURCE_OUTCOME = (
    "INSERT INTO source_outcomes (source, outcome, hour, count) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (source, outcome, hour) DO UPDATE SET count = count + excluded.count"
)
_ADD_DEAD_LETTER = (
    "INSERT INTO dead_letters (destination, seq, source, body, error, attempts, failed_at, stage)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_OUTCOME = (
    "INSERT INTO delivery_outcomes (destination, source, outcome, count, upto_seq, at) VALUES (?, ?, ?, ?, ?, ?)"
)

#: Outcome counts of a run of batches: (source, outcome) -> messages. Outcomes are ``delivered``,
#: ``dead_lettered``, ``filtered:<reason>`` (see README: Configuration), ``filtered:deleted`` (removed by a deletion
#: request) and ``redriven`` (a dead letter delivered later).
Outcomes = dict[tuple[str, str], int]
DELETED_OUTCOME = "filtered:deleted"
#: A deleted user's message whose row must stay (its seq may not be reused, or a worker has
#: read it): the body is replaced by this, and workers count it as ``filtered:deleted``.
TOMBSTONE_TYPE = "deleted"
_USER_ID = "json_extract(CAST(body AS TEXT), '$.userId')"
# A tombstone carries the message's own messageId; the message_id column is the dedup key,
# which differs for forwarded messages (gateway.ingest.hub.forwarded_key).
_MESSAGE_ID = "coalesce(json_extract(CAST(body AS TEXT), '$.messageId'), message_id)"
_UPSERT_INVENTORY = """
INSERT INTO privacy_inventory (source, path, class, hits, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (source, path) DO UPDATE SET class = excluded.class, hits = excluded.hits,
    first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen)
"""


# Purge walks from the oldest rows only (seq order follows arrival), so it costs what it
# deletes, not the size of the log. It never reaches the newest row (seq < head).
_PURGE = (
    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE seq <= ? AND seq < ? "
    f"ORDER BY seq LIMIT {PURGE_CHUNK}) AND received_at < ?"
)


def tombstone(message_id: str) -> bytes:
    """The body a deleted message's row keeps when the row itself must stay."""
    return msgspec.json.encode({"messageId": message_id, "type": TOMBSTONE_TYPE})


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a log written by an earlier version up to this schema (additions only, so an
    older gateway can still read it)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
    if "stage" not in columns:
        conn.execute("ALTER TABLE dead_letters ADD COLUMN stage TEXT NOT NULL DEFAULT 'send'")


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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


def _connect(path: Path, synchronous: str, cache_kib: int, wal_limit: int) -> sqlite3.Connection:
    # check_same_thread=False: each connection is used by one trio worker thread at a time,
    # serialised by its own CapacityLimiter(1).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {wal_limit}")
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    return conn


def _unavailable(error: sqlite3.Error) -> LogUnavailableError:
    text = str(error)
    if "full" in text:
        return LogUnavailableError("disk_full", f"the disk holding the log is full ({text})")
    if "locked" in text or "busy" in text:
        return LogUnavailableError("busy", f"the log is locked by another process ({text})")
    return LogUnavailableError("log_error", f"the log cannot be written ({text})")


class _Waiter:
    """One request's entries, and how it learns the outcome of the commit that took them."""

    __slots__ = ("done", "entries", "error", "letters", "redriven", "result", "tally")

    def __init__(
        self,
        entries: Sequence[Entry],
        letters: Sequence[SourceLetter] = (),
        tally: Mapping[tuple[str, str], int] | None = None,
        redriven: Sequence[int] = (),
    ) -> None:
        self.entries = entries
        self.letters = letters
        self.tally = tally
        self.redriven = redriven
        self.done = trio.Event()
        self.result: AppendResult | None = None
        self.error: LogUnavailableError | None = None


class SQLiteLog:
    """The SQLite engine behind :class:`gateway.log.IngestLog`. Build it with :func:`open_sqlite_log`."""

    def __init__(self, config: LogConfig, path: Path, observe_commit: Callable[[float], None] | None = None) -> None:
        self._config = config
        self._observe_commit = observe_commit
        self._last_commit_failed = False
        self._path = path
        # The writer's cache holds the hot part of the dedup index; readers scan forward.
        #: How much the WAL may hold before a checkpoint restarts it (see WAL_RESTART_BYTES).
        self._wal_limit = min(WAL_RESTART_BYTES, config.max_disk_bytes // 8)
        self._writer = _connect(path, config.synchronous, cache_kib=16384, wal_limit=self._wal_limit)
        self._writer.executescript(_SCHEMA)
        _upgrade(self._writer)
        self._writer.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._reader = _connect(path, config.synchronous, cache_kib=4096, wal_limit=self._wal_limit)
        self._maintainer = _connect(path, config.synchronous, cache_kib=1024, wal_limit=self._wal_limit)
        self._write_lock = trio.CapacityLimiter(1)
        self._read_lock = trio.CapacityLimiter(1)
        #: When the WAL may next be restarted, and the wait after the next busy try.
        self._wal_restart_at = 0.0
        self._wal_restart_backoff = WAL_RESTART_BACKOFF_SECS[0]
        self._wal_busy_warning = ThrottledWarning(log, "wal_restart_busy", interval_secs=600.0)
        self._maintain_lock = trio.CapacityLimiter(1)
        self._deleting = trio.Lock()
        # The highest seq each reader (destination) was handed; a record at or below it and
        # above the reader's cursor may be in flight. Reads without a name count for everyone.
        self._read_upto: dict[str, int] = {}
        self._read_upto_anyone = 0
        self.deletions = 0

        self._queue: list[_Waiter] = []
        self._queued_messages = 0
        self._queued_cursors: dict[str, int] = {}
        self._queued_outcomes: list[tuple[str, str, str, int, int]] = []
        self._cursor_waiters: list[_Waiter] = []
        self._work = trio.Event()
        self._advanced = trio.Event()
        self._closed = False
        self._committing = False
        self._idle = trio.Event()  # set whenever nothing is queued or being committed
        self._idle.set()
        self._commits = 0

        self._head_seq: int = self._writer.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
        self._cursors: dict[str, int] = dict(self._writer.execute("SELECT destination, seq FROM cursors"))
        self.suppressed: frozenset[str] = frozenset(
            r[0] for r in self._writer.execute("SELECT user_id FROM suppressions")
        )
        # Fixed once the database exists (a WAL database cannot change it).
        self._page_size: int = self._maintainer.execute("PRAGMA page_size").fetchone()[0]
        self._disk_bytes = self._measure_disk_bytes(self._maintainer)

    # -- appending ---------------------------------------------------------------------------

    async def append(
        self,
        entries: Sequence[Entry],
        *,
        letters: Sequence[SourceLetter] = (),
        tally: Mapping[tuple[str, str], int] | None = None,
        redriven: Sequence[int] = (),
    ) -> AppendResult:
        if self._closed:
            raise LogUnavailableError("closed", "the gateway is shutting down")
        if self._disk_bytes >= self._config.max_disk_bytes:
            raise LogUnavailableError(
                "log_full",
                f"the log holds {self._disk_bytes} bytes, at or past log.max_disk_bytes "
                f"({self._config.max_disk_bytes}); waiting for delivery and purging to free space",
            )
        if self._queued_messages + len(entries) > self._config.max_pending_messages:
            raise LogUnavailableError("overloaded", "too many messages are waiting for a commit")
        if not entries and not letters and not tally and not redriven:
            return AppendResult(stored=0, duplicates=0)
        waiter = _Waiter(entries, letters, tally, redriven)
        self._queue.append(waiter)
        self._queued_messages += len(entries)
        self._wake_committer()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def _wake_committer(self) -> None:
        self._work.set()
        if self._idle.is_set():
            self._idle = trio.Event()

    async def run_committer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit whatever queued while the previous commit ran, for ever (group commit)."""
        task_status.started()
        while True:
            await self._work.wait()
            self._work = trio.Event()
            waiters, self._queue = self._queue, []
            self._queued_messages = 0
            cursors, self._queued_cursors = self._queued_cursors, {}
            outcomes, self._queued_outcomes = self._queued_outcomes, []
            cursor_waiters, self._cursor_waiters = self._cursor_waiters, []
            self._committing = True
            started = time.perf_counter()
            try:
                results, head = await trio.to_thread.run_sync(
                    self._commit, waiters, cursors, outcomes, limiter=self._write_lock
                )
            except Exception as error:  # sqlite3 errors, and a bug must not take the committer down either
                failure = (
                    _unavailable(error)
                    if isinstance(error, sqlite3.Error)
                    else LogUnavailableError("log_error", f"the commit failed: {type(error).__name__}: {error}")
                )
                log.error("log_commit_failed", reason=failure.reason, error=str(error))
                for waiter in (*waiters, *cursor_waiters):
                    waiter.error = failure
                self._last_commit_failed = True
            else:
                self._last_commit_failed = False
                if self._observe_commit is not None:
                    self._observe_commit(time.perf_counter() - started)
                self._commits += 1
                for waiter, result in zip(waiters, results, strict=True):
                    waiter.result = result
                # Keep the size bound honest between maintenance runs (which measure exactly).
                self._disk_bytes += sum(len(e.body) + 64 for w in waiters for e in w.entries)
                self._cursors.update(cursors)
                if head > self._head_seq:
                    self._head_seq = head
                    self._advanced.set()
                    self._advanced = trio.Event()
            finally:
                self._committing = False
                for waiter in (*waiters, *cursor_waiters):
                    waiter.done.set()
                if not self._work.is_set():
                    self._idle.set()

    def _commit(
        self, waiters: list[_Waiter], cursors: dict[str, int], outcomes: list[tuple[str, str, str, int, int]]
    ) -> tuple[list[AppendResult], int]:
        now = _now_ms()
        conn = self._writer
        cur = conn.cursor()
        results = []
        with _transaction(conn):
            books: Counter[tuple[str, str]] = Counter()
            for waiter in waiters:
                stored = 0
                # Runs of one source (a request's own messages, then what its filters forwarded),
                # so the books know each source's stored and duplicate counts.
                for source, run in groupby(waiter.entries, key=attrgetter("source")):
                    run_entries = list(run)
                    run_stored = 0
                    for chunk in _append_chunks(run_entries):
                        params = [value for e in chunk for value in (e.source, e.message_id, now, e.body)]
                        cur.execute(_APPEND_SQL[len(chunk)], params)
                        # This statement's rows (the connection's total_changes is a C int that wraps).
                        run_stored += cur.rowcount
                    stored += run_stored
                    if waiter.tally is not None:
                        books[(source, "stored")] += run_stored
                        books[(source, "duplicates")] += len(run_entries) - run_stored
                if waiter.tally:
                    books.update(waiter.tally)
                if waiter.redriven:
                    cur.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in waiter.redriven])
                if waiter.letters:
                    cur.executemany(
                        _ADD_DEAD_LETTER,
                        [(x.destination, 0, x.source, x.body, x.error, 1, now, x.stage) for x in waiter.letters],
                    )
                results.append(AppendResult(stored=stored, duplicates=len(waiter.entries) - stored))
            hour = now // 3_600_000
            cur.executemany(
                _ADD_SOURCE_OUTCOME, [(source, outcome, hour, n) for (source, outcome), n in books.items() if n]
            )
            for destination, seq in cursors.items():
                cur.execute(_SET_CURSOR, (destination, seq, now))
            cur.executemany(_ADD_OUTCOME, [(*row, now) for row in outcomes])
            head = cur.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
        return results, head

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        def query() -> list[Record]:
            rows = self._reader.execute(
                "SELECT seq, source, body, received_at FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, max_records),
            ).fetchall()
            records: list[Record] = []
            size = 0
            for seq, source, body, received_at in rows:
                size += len(body)
                if records and size > max_bytes:
                    break
                records.append(Record(seq=seq, source=source, body=body, received_at=received_at))
            # Under the read lock, which a deletion holds too: it sees every read that got rows.
            if records:
                last = records[-1].seq
                if reader is None:
                    self._read_upto_anyone = max(self._read_upto_anyone, last)
                elif last > self._read_upto.get(reader, 0):
                    self._read_upto[reader] = last
            return records

        return await trio.to_thread.run_sync(query, limiter=self._read_lock)

    def head(self) -> int:
        return self._head_seq

    async def wait_for_records(self, after_seq: int) -> None:
        while self._head_seq <= after_seq:
            await self._advanced.wait()

    # -- cursors and dead letters ------------------------------------------------------------

    async def cursor(self, destination: str, *, start_ms: int | None = None) -> int:
        if destination not in self._cursors:
            # A new destination gets what arrives from now on, unless asked to replay the archive.
            start = self._head_seq
            if start_ms is not None:

                def first_at_or_after() -> int | None:
                    row = self._reader.execute(
                        "SELECT min(seq) FROM messages WHERE received_at >= ?", (start_ms,)
                    ).fetchone()
                    return row[0] if row else None

                first = await trio.to_thread.run_sync(first_at_or_after, limiter=self._read_lock)
                start = first - 1 if first is not None else self._head_seq
                if start < self._head_seq:
                    await trio.to_thread.run_sync(self._start_cursor, destination, start, limiter=self._write_lock)
                    self._cursors[destination] = start
                    return start
            await self.set_cursor(destination, start)
        return self._cursors[destination]

    def _start_cursor(self, destination: str, start: int) -> None:
        """A destination that replays the archive from ``start``: messages a deletion request
        removed above it are booked as ``filtered:deleted`` with its cursor, in one transaction."""
        now = _now_ms()
        with _transaction(self._writer):
            self._writer.execute(_SET_CURSOR, (destination, start, now))
            deleted = self._writer.execute(
                "SELECT seq, source FROM deleted_seqs WHERE seq > ? ORDER BY seq", (start,)
            ).fetchall()
            runs = _runs(deleted, after=start)
            self._writer.executemany(
                _ADD_OUTCOME, [(destination, source, DELETED_OUTCOME, n, upto, now) for source, n, upto in runs]
            )

    async def cursors(self) -> dict[str, tuple[int, int]]:
        def query() -> dict[str, tuple[int, int]]:
            rows = self._reader.execute("SELECT destination, seq, start_seq FROM cursors").fetchall()
            return {name: (seq, start) for name, seq, start in rows}

        return await trio.to_thread.run_sync(query, limiter=self._read_lock)

    async def forget_cursor(self, name: str) -> None:
        def write() -> None:
            with _transaction(self._writer):
                self._writer.execute("DELETE FROM cursors WHERE destination = ?", (name,))
                self._writer.execute("DELETE FROM delivery_outcomes WHERE destination = ?", (name,))

        await trio.to_thread.run_sync(write, limiter=self._write_lock)
        self._cursors.pop(name, None)
        self._read_upto.pop(name, None)

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        head = self._head_seq

        def query() -> tuple[int, int]:
            first = self._reader.execute(
                "SELECT min(seq) FROM messages WHERE received_at >= ? AND seq <= ?", (since_ms, head)
            ).fetchone()[0]
            if first is None:
                return head, head
            upto = head
            if until_ms is not None:
                last = self._reader.execute(
                    "SELECT max(seq) FROM messages WHERE received_at < ? AND seq <= ?", (until_ms, head)
                ).fetchone()[0]
                upto = max(first - 1, last or 0)
            return first - 1, upto

        return await trio.to_thread.run_sync(query, limiter=self._read_lock)

    async def set_cursor(self, destination: str, seq: int, outcomes: Outcomes | None = None) -> None:
        waiter = _Waiter(())
        self._queued_cursors[destination] = seq
        for (source, outcome), count in (outcomes or {}).items():
            self._queued_outcomes.append((destination, source, outcome, count, seq))
        self._cursor_waiters.append(waiter)
        self._wake_committer()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    async def add_dead_letters(
        self, destination: str, records: Sequence[Record], error: str, attempts: int, *, stage: str = SEND_STAGE
    ) -> None:
        now = _now_ms()
        rows = [(destination, r.seq, r.source, r.body, error, attempts, now, stage) for r in records]

        def insert() -> None:
            with _transaction(self._writer):
                # A record read before its user was deleted: its row is a tombstone now, and
                # its personal data must not come back as a dead letter.
                erased = {
                    seq
                    for (seq,) in self._writer.execute(
                        "SELECT seq FROM messages WHERE seq IN (SELECT value FROM json_each(?)) "
                        "AND json_extract(CAST(body AS TEXT), '$.type') = ?",
                        (msgspec.json.encode([r.seq for r in records]).decode(), TOMBSTONE_TYPE),
                    )
                }
                self._writer.executemany(
                    "INSERT INTO dead_letters (destination, seq, source, body, error, attempts, failed_at, stage)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [row for row in rows if not row[1] or row[1] not in erased],
                )

        await trio.to_thread.run_sync(insert, limiter=self._write_lock)

    async def take_redrive(self, destination: str, limit: int) -> list[tuple[int, Record, str]]:
        """Dead letters an operator asked to send again to ``destination``, oldest first."""

        def query() -> list[tuple[int, Record, str]]:
            rows = self._reader.execute(
                "SELECT id, seq, source, body, stage FROM dead_letters WHERE destination = ? AND state = 'redrive' "
                "ORDER BY id LIMIT ?",
                (destination, limit),
            ).fetchall()
            return [(i, Record(seq=seq, source=source, body=body), stage) for i, seq, source, body, stage in rows]

        return await trio.to_thread.run_sync(query, limiter=self._read_lock)

    async def finish_redrive(
        self,
        destination: str,
        delivered: Sequence[tuple[int, Record]],
        failed: Sequence[int],
        error: str,
        *,
        dropped: Sequence[int] = (),
    ) -> None:
        """Drop redriven letters the destination took (counting them as ``redriven`` in the
        destination's books; a source's letters are in no books: they were never stored), and
        hold the ones it refused again."""
        now = _now_ms()
        counts: dict[str, int] = {}
        for _, record in delivered:
            if record.seq:
                counts[record.source] = counts.get(record.source, 0) + 1

        def write() -> None:
            with _transaction(self._writer):
                self._writer.executemany(
                    "DELETE FROM dead_letters WHERE id = ?", [(i,) for i, _ in delivered] + [(i,) for i in dropped]
                )
                self._writer.executemany(
                    "UPDATE dead_letters SET state = 'dead', error = ?, attempts = attempts + 1, failed_at = ? "
                    "WHERE id = ?",
                    [(error, now, i) for i in failed],
                )
                self._writer.executemany(
                    _ADD_OUTCOME,
                    [
                        (destination, source, "redriven", count, self._cursors.get(destination, 0), now)
                        for source, count in counts.items()
                    ],
                )

        await trio.to_thread.run_sync(write, limiter=self._write_lock)

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await trio.to_thread.run_sync(
            lambda: _dead_letters(self._reader, destination, limit), limiter=self._read_lock
        )

    async def change_dead_letters(self, action: str, *, destination: str | None = None, ids: Sequence[int] = ()) -> int:
        """``redrive`` (mark for sending again) or ``discard`` (delete) dead letters, chosen by
        id or by destination; returns how many changed."""
        if action not in ("redrive", "discard"):
            raise ValueError(f"unknown action {action!r}")
        where, args = _dead_letter_selection(destination, ids)
        sql = (
            f"UPDATE dead_letters SET state = 'redrive' WHERE state = 'dead' AND {where}"
            if action == "redrive"
            else f"DELETE FROM dead_letters WHERE state = 'dead' AND {where}"
        )

        def write() -> int:
            with _transaction(self._writer):
                changed: int = self._writer.execute(sql, args).rowcount
            return changed

        return await trio.to_thread.run_sync(write, limiter=self._write_lock)

    async def set_suppressed(self, user_id: str, suppressed: bool) -> bool:
        """Add (or remove) a userId to the suppression list; returns whether anything changed."""

        def write() -> bool:
            with _transaction(self._writer):
                if suppressed:
                    cursor = self._writer.execute(
                        "INSERT OR IGNORE INTO suppressions (user_id, created_at) VALUES (?, ?)", (user_id, _now_ms())
                    )
                else:
                    cursor = self._writer.execute("DELETE FROM suppressions WHERE user_id = ?", (user_id,))
            return cursor.rowcount > 0

        changed = await trio.to_thread.run_sync(write, limiter=self._write_lock)
        self.suppressed = self.suppressed | {user_id} if suppressed else self.suppressed - {user_id}
        return changed

    # -- deletion requests -------------------------------------------------------------------

    async def delete_user(self, user_id: str, destinations: Sequence[str]) -> DeletionReport:
        """Remove every message and dead letter of ``user_id`` in one transaction.

        A message no worker can have in flight is deleted; the newest row, and one a worker
        has read but not recorded yet, keeps its seq with a tombstone body instead (a seq is
        never reused; the worker books it as it goes). For every destination whose cursor is
        below a deleted message, ``filtered:deleted`` outcomes are written in the same
        transaction: one row per source and run of consecutive deleted seqs, so ``audit
        --since`` stays exact too. Freed space is zeroed (``secure_delete``) and the WAL is
        checkpointed and truncated, so the bytes leave the files on disk.
        """
        async with self._deleting:
            await self._flush()  # appends queued before (e.g. before a suppression) are in
            candidates, scanned_to = await trio.to_thread.run_sync(self._find_user_rows, user_id)
            # Holding the read lock: no read is half done, so the read horizons are exact.
            async with self._read_lock:
                report = await trio.to_thread.run_sync(
                    self._delete_user, user_id, candidates, scanned_to, tuple(destinations), limiter=self._write_lock
                )
                self.deletions += 1
            await self._truncate_wal()
        log.info(
            "user_deleted",
            messages_deleted=report.messages_deleted,
            tombstoned=report.tombstoned,
            dead_letters_deleted=report.dead_letters_deleted,
        )
        return report

    async def _flush(self) -> None:
        """Return once everything queued before this call is committed (or failed)."""
        waiter = _Waiter(())
        self._cursor_waiters.append(waiter)
        self._wake_committer()
        await waiter.done.wait()

    def _find_user_rows(self, user_id: str) -> tuple[list[int], int]:
        """Scan the log for the user's rows on a connection of its own, so the full scan
        holds up neither commits nor workers; the transaction then checks only these rows
        and the ones stored since (seq > the head seen here)."""
        conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("BEGIN")
            scanned_to: int = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
            seqs = [s for (s,) in conn.execute(f"SELECT seq FROM messages WHERE {_USER_ID} = ?", (user_id,))]
            conn.execute("COMMIT")
        finally:
            conn.close()
        return seqs, scanned_to

    def _delete_user(
        self, user_id: str, candidates: list[int], scanned_to: int, destinations: tuple[str, ...]
    ) -> DeletionReport:
        conn = self._writer
        now = _now_ms()
        secure_delete = conn.execute("PRAGMA secure_delete").fetchone()[0]
        conn.execute("PRAGMA secure_delete = ON")
        cur = conn.cursor()
        try:
            with _transaction(conn):
                rows: list[tuple[int, str, str]] = cur.execute(
                    f"SELECT seq, source, {_MESSAGE_ID} FROM messages WHERE seq IN (SELECT value FROM json_each(?)) "
                    f"AND {_USER_ID} = ?",
                    (msgspec.json.encode(candidates).decode(), user_id),
                ).fetchall()
                rows += cur.execute(
                    f"SELECT seq, source, {_MESSAGE_ID} FROM messages WHERE seq > ? AND {_USER_ID} = ?",
                    (scanned_to, user_id),
                ).fetchall()
                rows.sort()
                head = cur.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
                cursors: dict[str, int] = dict(cur.execute("SELECT destination, seq FROM cursors"))
                # (cursor, horizon]: what each destination may have in flight.
                windows = [
                    (cursor, max(cursor, self._read_upto.get(d, 0), self._read_upto_anyone))
                    for d, cursor in cursors.items()
                ]
                deleted: list[tuple[int, str]] = []
                kept: list[tuple[bytes, int]] = []
                for seq, source, message_id in rows:
                    if seq == head or any(low < seq <= high for low, high in windows):
                        kept.append((tombstone(message_id), seq))
                    else:
                        deleted.append((seq, source))
                cur.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq, _ in deleted])
                cur.executemany("INSERT OR IGNORE INTO deleted_seqs (seq, source) VALUES (?, ?)", deleted)
                cur.executemany("UPDATE messages SET body = ? WHERE seq = ?", kept)
                dead_letters = cur.execute(f"DELETE FROM dead_letters WHERE {_USER_ID} = ?", (user_id,)).rowcount
                outcomes = [
                    (destination, source, DELETED_OUTCOME, count, upto, now)
                    for destination, cursor in cursors.items()
                    for source, count, upto in _runs(deleted, after=cursor)
                ]
                cur.executemany(_ADD_OUTCOME, outcomes)
                cur.execute(
                    "INSERT INTO deletion_requests (user_id, requested_at, messages_deleted, tombstoned, "
                    "dead_letters_deleted) VALUES (?, ?, ?, ?, ?)",
                    (user_id, now, len(deleted), len(kept), dead_letters),
                )
        finally:
            conn.execute(f"PRAGMA secure_delete = {('OFF', 'ON', 'FAST')[int(secure_delete)]}")
        removed = [seq for seq, _, _ in rows]
        pending = {d: sum(1 for seq in removed if seq > cursors.get(d, head)) for d in destinations}
        return DeletionReport(
            user_id=user_id,
            messages_deleted=len(deleted),
            tombstoned=len(kept),
            dead_letters_deleted=dead_letters,
            pending=pending,
        )

    async def _truncate_wal(self) -> None:
        """Checkpoint the whole WAL into the database and truncate it to zero bytes, so the
        page images from before a deletion are gone from the disk. Retries while a reader
        (a worker, an admin command) holds an older snapshot."""
        for _ in range(50):
            if await self._reset_wal("TRUNCATE", wait_ms=100):
                return
            await trio.sleep(0.1)
        log.warning("wal_not_truncated", reason="a reader kept an old snapshot; the next checkpoints overwrite it")

    async def _reset_wal(self, mode: Literal["RESTART", "TRUNCATE"], wait_ms: int) -> bool:
        """Checkpoint all of the WAL so the next commit writes it from the start (RESTART), or
        truncate it too (TRUNCATE). False if a reader of another process holds an older snapshot.

        It runs on the writer between commits, with this process's readers held back, so
        only what the last passive checkpoint left is copied while commits wait.
        """

        def run() -> bool:
            # Briefly: commits wait behind this, so a reader in the way means "try again later".
            self._writer.execute(f"PRAGMA busy_timeout = {wait_ms}")
            try:
                busy: int = self._writer.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
            finally:
                self._writer.execute("PRAGMA busy_timeout = 30000")
            return busy == 0

        async with self._maintain_lock, self._read_lock:
            return await trio.to_thread.run_sync(run, limiter=self._write_lock)

    # -- privacy inventory ---------------------------------------------------------------------

    async def save_inventory(self, rows: Sequence[InventoryRow]) -> None:
        data = [
            (r.source, r.path, r.cls, msgspec.json.encode(r.hits).decode(), r.first_seen, r.last_seen) for r in rows
        ]

        def write() -> None:
            with _transaction(self._writer):
                self._writer.executemany(_UPSERT_INVENTORY, data)

        await trio.to_thread.run_sync(write, limiter=self._write_lock)

    async def load_inventory(self) -> list[InventoryRow]:
        return await trio.to_thread.run_sync(_inventory_rows, self._reader, None, limiter=self._read_lock)

    # -- upkeep ------------------------------------------------------------------------------

    async def purge(self, destinations: Sequence[str]) -> int:
        """Delete messages every destination has that are past both the archive period and the
        dedup window. Returns how many were deleted."""
        delivered_up_to = min((self._cursors.get(d, self._head_seq) for d in destinations), default=self._head_seq)
        keep_secs = max(self._config.archive_secs, self._config.dedup_window_secs)
        cutoff = _now_ms() - keep_secs * 1000

        def purge_chunk() -> int:
            with _transaction(self._writer):
                deleted: int = self._writer.execute(_PURGE, (delivered_up_to, self._head_seq, cutoff)).rowcount
            return deleted

        def forget_deleted_seqs() -> None:
            # No destination can start below the oldest message left, so older holes are moot.
            with _transaction(self._writer):
                self._writer.execute("DELETE FROM deleted_seqs WHERE seq < (SELECT min(seq) FROM messages)")

        total = 0
        # One chunk per transaction, so commits interleave with a long purge.
        while True:
            deleted = await trio.to_thread.run_sync(purge_chunk, limiter=self._write_lock)
            total += deleted
            if deleted < PURGE_CHUNK:
                break
        if total:
            await trio.to_thread.run_sync(forget_deleted_seqs, limiter=self._write_lock)
        return total

    async def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking commits (PASSIVE), and re-measure
        the size on disk. Called often, so each checkpoint stays small. Past
        :data:`WAL_RESTART_BYTES`, restart the WAL, which passive checkpoints never do while
        commits keep coming."""

        def run() -> tuple[int, int]:
            frames = self._maintainer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
            # What the WAL holds since it last started over; the file keeps its size after a
            # restart (up to the limit), so its size says nothing once a burst is over.
            return self._measure_disk_bytes(self._maintainer), max(frames, 0) * self._page_size

        self._disk_bytes, wal_in_use = await trio.to_thread.run_sync(run, limiter=self._maintain_lock)
        now = time.monotonic()
        if wal_in_use <= self._wal_limit or now < self._wal_restart_at:
            return
        if await self._reset_wal("RESTART", wait_ms=WAL_RESTART_WAIT_MS):
            self._wal_restart_backoff = WAL_RESTART_BACKOFF_SECS[0]
            return
        self._wal_restart_at = now + self._wal_restart_backoff
        self._wal_busy_warning(
            wal_bytes=self._wal_bytes(),
            retry_in_secs=self._wal_restart_backoff,
            reason="another connection keeps reading the log, so the WAL cannot start over",
        )
        self._wal_restart_backoff = min(self._wal_restart_backoff * 2, WAL_RESTART_BACKOFF_SECS[1])

    def _measure_disk_bytes(self, conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size + self._wal_bytes())

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self._path}-wal")
        except OSError:
            return 0

    async def backlog(self, destinations: Sequence[str]) -> list[BacklogInfo]:
        head = self._head_seq
        positions = {d: self._cursors.get(d, head) for d in destinations}

        def query() -> list[BacklogInfo]:
            infos = []
            for destination, cursor in positions.items():
                waiting = max(0, head - cursor)
                oldest, average = 0.0, 0.0
                if waiting:
                    oldest_row, average_row = self._reader.execute(
                        "SELECT (SELECT received_at FROM messages WHERE seq > ?1 ORDER BY seq LIMIT 1), "
                        "(SELECT avg(length(body)) FROM "
                        "(SELECT body FROM messages WHERE seq > ?1 ORDER BY seq LIMIT 200))",
                        (cursor,),
                    ).fetchone()
                    oldest, average = (oldest_row or 0) / 1000, average_row or 0.0
                infos.append(BacklogInfo(destination, waiting, int(waiting * average), oldest))
            return infos

        return await trio.to_thread.run_sync(query, limiter=self._read_lock)

    def writable(self) -> bool:
        return not self._closed and not self._last_commit_failed and self._disk_bytes < self._config.max_disk_bytes

    def reconfigure(self, config: LogConfig) -> None:
        # engine and synchronous need a restart (the runtime refuses such a reload).
        self._config = config

    def statistics(self) -> LogStatistics:
        return LogStatistics(
            head_seq=self._head_seq,
            disk_bytes=self._disk_bytes,
            pending_messages=self._queued_messages,
            commits=self._commits,
            cursors=dict(self._cursors),
        )

    async def aclose(self) -> None:
        """Refuse new appends and wait until everything queued is committed."""
        self._closed = True
        await self._idle.wait()

    def close_connections(self) -> None:
        for conn in (self._reader, self._maintainer, self._writer):
            conn.close()


def _runs(deleted: list[tuple[int, str]], *, after: int) -> list[tuple[str, int, int]]:
    """``(source, count, last seq)`` of each run of consecutive seqs from one source in
    ``deleted`` (sorted) above ``after``. No cursor can ever stop inside such a run (its seqs
    are gone), which is what keeps ``audit --since`` exact."""
    runs: list[list[Any]] = []
    for seq, source in deleted:
        if seq <= after:
            continue
        if runs and runs[-1][0] == source and runs[-1][2] == seq - 1:
            runs[-1][1] += 1
            runs[-1][2] = seq
        else:
            runs.append([source, 1, seq])
    return [(source, count, last) for source, count, last in runs]


def _inventory_rows(conn: sqlite3.Connection, source: str | None) -> list[InventoryRow]:
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
        return _inventory_rows(conn, source)
    finally:
        conn.close()


def _dead_letter_selection(destination: str | None, ids: Sequence[int]) -> tuple[str, tuple[object, ...]]:
    if ids:
        return f"id IN ({','.join('?' * len(ids))})", tuple(int(i) for i in ids)
    if destination:
        return "destination = ?", (destination,)
    raise ValueError("choose dead letters by ids or by destination")


def _dead_letters(conn: sqlite3.Connection, destination: str | None, limit: int) -> list[DeadLetter]:
    sql = "SELECT id, destination, seq, source, body, error, attempts, failed_at, state, stage FROM dead_letters"
    args: tuple[object, ...] = ()
    if destination:
        sql += " WHERE destination = ?"
        args = (destination,)
    sql += " ORDER BY id LIMIT ?"
    rows = conn.execute(sql, (*args, limit)).fetchall()
    return [
        DeadLetter(
            id=i, destination=d, seq=s, source=src, body=b, error=e, attempts=a, failed_at=f / 1000, state=st, stage=sg
        )
        for i, d, s, src, b, e, a, f, st, sg in rows
    ]


def list_dead_letters(data_dir: Path, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Read dead letters straight from the log file (works while the daemon runs)."""
    conn = open_log_file(data_dir)
    try:
        return _dead_letters(conn, destination, limit)
    finally:
        conn.close()


LOCK_NAME = "gateway.lock"


def _lock_data_dir(data_dir: Path) -> int:
    """Hold ``data_dir`` for this process (an advisory lock the kernel drops when it exits, even
    on kill -9): two gateways writing one log would each deliver what the other stored, and
    their books would not balance. Returns the lock's file descriptor.

    Raises:
        LogUnavailableError: another process holds it.
    """
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LogUnavailableError(
                "locked", f"{data_dir} is in use by another gateway (pid {holder}): one data_dir serves one gateway"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)  # (which also lets go of the lock, if it was taken)
        raise
    return fd


@asynccontextmanager
async def open_sqlite_log(
    config: LogConfig, data_dir: Path, *, observe_commit: Callable[[float], None] | None = None
) -> AsyncIterator[SQLiteLog]:
    """Open (creating if needed) the SQLite log in ``data_dir`` and run its committer.

    Resource handling:
        On exit, new appends are refused, queued ones are committed, then the connections close.
    """

    def open_files() -> tuple[SQLiteLog, int]:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_data_dir(data_dir)
        try:
            return SQLiteLog(config, data_dir / DB_NAME, observe_commit), lock
        except BaseException as error:
            os.close(lock)
            if isinstance(error, sqlite3.Error):
                raise LogUnavailableError("log_error", f"cannot open the log {data_dir / DB_NAME}: {error}") from error
            raise

    sqlite_log, lock = await trio.to_thread.run_sync(open_files)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sqlite_log.run_committer)
            try:
                yield sqlite_log
            finally:
                with trio.move_on_after(30, shield=True):
                    await sqlite_log.aclose()
                nursery.cancel_scope.cancel()
    finally:
        try:
            sqlite_log.close_connections()
        finally:
            os.close(lock)
