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

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TypeVar

import structlog
import trio

from gateway.components import Record
from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import (
    SEND_STAGE,
    SERIES_KEEP_MS,
    AppendResult,
    BacklogInfo,
    Clock,
    DeadLetter,
    DeletionReport,
    Entry,
    InventoryRow,
    LogBooks,
    LogStatistics,
    Outcomes,
    SeriesCounts,
    SeriesSample,
    SourceLetter,
    wall_clock_ms,
)
from gateway.log.sqlite import _dead_letters, _deletion, _inventory, _reads, _series
from gateway.log.sqlite._commit import QueuedOutcome, Waiter, commit_group
from gateway.log.sqlite._dedup import DedupSlices
from gateway.log.sqlite._schema import connect, create_schema, probe, reading, unavailable, writing
from gateway.log.sqlite._upkeep import Upkeep, full_at, wal_limit

log = structlog.get_logger("gateway.log")
T = TypeVar("T")

#: The writer's page cache: the open dedup slice's pages (_dedup.SLICE_KEYS keys, more at high
#: rates up to _dedup.MAX_SLICE_KEYS, at about 60 bytes a key) and the upper levels of the older
#: slices' B-trees.
WRITER_CACHE_KIB = 64 * 1024
#: When the dedup slices' Bloom filters are first built after opening, and checked again.
FILTER_START_SECS = 10.0
FILTER_CHECK_SECS = 10.0


class SQLiteLog:
    """The SQLite engine behind :class:`gateway.log.IngestLog`. Build it with :func:`open_sqlite_log`."""

    def __init__(
        self,
        config: LogConfig,
        path: Path,
        observe_commit: Callable[[float], None] | None = None,
        *,
        clock_ms: Clock = wall_clock_ms,
    ) -> None:
        self._config = config
        self._full_at = full_at(config.max_disk_bytes)
        self._observe_commit = observe_commit
        self._now_ms = clock_ms
        self._last_commit_failed = False
        #: Why the last commit failed, for /ready's reasons (while _last_commit_failed).
        self._last_failure: LogUnavailableError | None = None
        self._path = path
        # The writer's cache holds the current dedup slice and the hot pages of the older ones;
        # readers scan forward.
        limit = wal_limit(config.max_disk_bytes)
        self._writer = connect(path, config.synchronous, cache_kib=WRITER_CACHE_KIB, wal_limit=limit)
        create_schema(self._writer, clock_ms(), config.dedup_window_secs * 1000)
        self._dedup = DedupSlices(self._writer)
        self._reader = connect(path, config.synchronous, cache_kib=4096, wal_limit=limit)
        maintainer = connect(path, config.synchronous, cache_kib=1024, wal_limit=limit)
        self._write_lock = trio.CapacityLimiter(1)
        self._read_lock = trio.CapacityLimiter(1)
        self._upkeep = Upkeep(
            path, self._writer, maintainer, write_lock=self._write_lock, read_lock=self._read_lock, wal_limit=limit
        )
        self._connections = (self._reader, maintainer, self._writer)
        self._deleting = trio.Lock()
        # The highest seq each reader (destination) was handed; a record at or below it and
        # above the reader's cursor may be in flight. Reads without a name count for everyone.
        self._read_upto: dict[str, int] = {}
        self._read_upto_anyone = 0
        self.deletions = 0

        self._queue: list[Waiter] = []
        self._queued_messages = 0
        self._queued_cursors: dict[str, int] = {}
        self._queued_outcomes: list[QueuedOutcome] = []
        self._cursor_waiters: list[Waiter] = []
        self._work = trio.Event()
        self._advanced = trio.Event()
        self._closed = False
        self._committing = False
        self._idle = trio.Event()  # set whenever nothing is queued or being committed
        self._idle.set()
        self._commits = 0

        self._head_seq: int = _reads.head_seq(self._writer)
        self._cursors: dict[str, int] = {name: seq for name, (seq, _) in _reads.cursor_positions(self._writer).items()}
        self.suppressed: frozenset[str] = _deletion.suppressed_users(self._writer)
        self._disk_bytes = self._upkeep.measure_disk_bytes()

    # -- appending: the group committer --------------------------------------------------------

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
        if self._disk_bytes >= self._full_at:
            raise LogUnavailableError(
                "log_full", f"{self._full_text()}; waiting for delivery and purging to free space"
            )
        if self._queued_messages + len(entries) > self._config.max_pending_messages:
            raise LogUnavailableError("overloaded", "too many messages are waiting for a commit")
        if not entries and not letters and not tally and not redriven:
            return AppendResult(stored=0, duplicates=0)
        waiter = Waiter(entries, letters, tally, redriven)
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
                    commit_group,
                    self._writer,
                    waiters,
                    cursors,
                    outcomes,
                    self._now_ms(),
                    self._dedup,
                    self._config.dedup_window_secs * 1000,
                    limiter=self._write_lock,
                )
            except Exception as error:  # sqlite3 errors, and a bug must not take the committer down either
                failure = (
                    unavailable(error)
                    if isinstance(error, sqlite3.Error)
                    else LogUnavailableError("log_error", f"the commit failed: {type(error).__name__}: {error}")
                )
                log.error("log_commit_failed", reason=failure.reason, error=str(error))
                for waiter in (*waiters, *cursor_waiters):
                    waiter.error = failure
                self._last_commit_failed = True
                self._last_failure = failure
            else:
                self._last_commit_failed = False
                if self._observe_commit is not None:
                    self._observe_commit(time.perf_counter() - started)
                self._commits += 1
                for waiter, result in zip(waiters, results, strict=True):
                    waiter.result = result
                # Keep the size bound honest between maintenance runs (which measure exactly):
                # a row is written to the WAL and, at the checkpoint, to the database, so it
                # counts twice until then (counted once, the log went 0.2% past the bound).
                self._disk_bytes += 2 * sum(len(e.body) + 64 for w in waiters for e in w.entries)
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

    async def run_filter_builder(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Build the Bloom filters of the dedup slices this process found on open (those it
        opens have theirs from the start), off the commit path: a while after the log opened
        (not to slow a restart down), then again for a slice :meth:`cover` added. Until its
        filter is built, a slice is looked up."""
        task_status.started()
        await trio.sleep(FILTER_START_SECS)
        while True:
            # Abandoned on shutdown: it only reads, on a connection of its own.
            await trio.to_thread.run_sync(self._dedup.build_filters, self._path, abandon_on_cancel=True)
            await trio.sleep(FILTER_CHECK_SECS)

    async def set_cursor(self, destination: str, seq: int, outcomes: Outcomes | None = None) -> None:
        waiter = Waiter(())
        self._queued_cursors[destination] = seq
        for (source, outcome), count in (outcomes or {}).items():
            self._queued_outcomes.append((destination, source, outcome, count, seq))
        self._cursor_waiters.append(waiter)
        self._wake_committer()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    async def _flush(self) -> None:
        """Return once everything queued before this call is committed (or failed)."""
        waiter = Waiter(())
        self._cursor_waiters.append(waiter)
        self._wake_committer()
        await waiter.done.wait()

    # -- reading and cursors -----------------------------------------------------------------

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        def query(conn: sqlite3.Connection) -> list[Record]:
            records = _reads.read_records(conn, after_seq, max_records, max_bytes)
            # Under the read lock, which a deletion holds too: it sees every read that got rows.
            if records:
                last = records[-1].seq
                if reader is None:
                    self._read_upto_anyone = max(self._read_upto_anyone, last)
                elif last > self._read_upto.get(reader, 0):
                    self._read_upto[reader] = last
            return records

        return await self._read(query)

    def head(self) -> int:
        return self._head_seq

    async def wait_for_records(self, after_seq: int) -> None:
        while self._head_seq <= after_seq:
            await self._advanced.wait()

    async def cursor(self, destination: str, *, start_ms: int | None = None) -> int:
        if destination not in self._cursors:
            # A new destination gets what arrives from now on, unless asked to replay the archive.
            start = self._head_seq
            if start_ms is not None:
                first = await self._read(_reads.first_seq_from, start_ms)
                start = first - 1 if first is not None else self._head_seq
                if start < self._head_seq:
                    await self._write(_reads.start_cursor, destination, start, self._now_ms())
                    self._cursors[destination] = start
                    return start
            await self.set_cursor(destination, start)
        return self._cursors[destination]

    async def hold(self, destination: str) -> int | None:
        """At once: one gateway writes a SQLite log (the data_dir lock)."""
        await trio.lowlevel.checkpoint()
        return self._cursors.get(destination)

    async def release(self, destination: str) -> None:
        await trio.lowlevel.checkpoint()

    async def cursors(self) -> dict[str, tuple[int, int]]:
        return await self._read(_reads.cursor_positions)

    async def forget_cursor(self, name: str) -> None:
        await self._write(_reads.forget_cursor, name)
        self._cursors.pop(name, None)
        self._read_upto.pop(name, None)

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        return await self._read(_reads.seq_range, since_ms, until_ms, self._head_seq)

    async def books(self, since_ms: int | None = None) -> LogBooks:
        return await trio.to_thread.run_sync(reading(_reads.books_of_file), self._path, since_ms)

    async def backlog(self, destinations: Sequence[str]) -> list[BacklogInfo]:
        head = self._head_seq
        return await self._read(_reads.backlog, {d: self._cursors.get(d, head) for d in destinations}, head)

    # -- dead letters --------------------------------------------------------------------------

    async def add_dead_letters(
        self, destination: str, records: Sequence[Record], error: str, attempts: int, *, stage: str = SEND_STAGE
    ) -> None:
        now = self._now_ms()
        await self._write(_dead_letters.add_dead_letters, destination, records, error, attempts, stage, now)

    async def take_redrive(self, destination: str, limit: int) -> list[tuple[int, Record, str]]:
        return await self._read(_dead_letters.take_redrive, destination, limit)

    async def finish_redrive(
        self,
        destination: str,
        delivered: Sequence[tuple[int, Record]],
        failed: Sequence[int],
        error: str,
        *,
        dropped: Sequence[int] = (),
    ) -> None:
        finish = partial(_dead_letters.finish_redrive, cursor=self._cursors.get(destination, 0), now=self._now_ms())
        await self._write(finish, destination, delivered, failed, error, dropped)

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await self._read(_dead_letters.list_dead_letters, destination, limit)

    async def change_dead_letters(self, action: str, *, destination: str | None = None, ids: Sequence[int] = ()) -> int:
        return await self._write(_dead_letters.change_dead_letters, action, destination, ids)

    # -- privacy requests ----------------------------------------------------------------------

    async def set_suppressed(self, user_id: str, suppressed: bool) -> bool:
        changed = await self._write(_deletion.set_suppressed, user_id, suppressed, self._now_ms())
        self.suppressed = self.suppressed | {user_id} if suppressed else self.suppressed - {user_id}
        return changed

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
            candidates, scanned_to = await trio.to_thread.run_sync(_deletion.find_user_rows, self._path, user_id)
            # Holding the read lock: no read is half done, so the read horizons are exact.
            async with self._read_lock:
                delete = partial(
                    _deletion.delete_user_rows,
                    dedup=self._dedup,
                    read_upto=self._read_upto,
                    read_upto_anyone=self._read_upto_anyone,
                    now=self._now_ms(),
                )
                report = await self._write(delete, user_id, candidates, scanned_to, tuple(destinations))
                self.deletions += 1
            await self._upkeep.truncate_wal()
        log.info(
            "user_deleted",
            messages_deleted=report.messages_deleted,
            tombstoned=report.tombstoned,
            dead_letters_deleted=report.dead_letters_deleted,
        )
        return report

    # -- privacy inventory ---------------------------------------------------------------------

    async def save_inventory(self, rows: Sequence[InventoryRow]) -> None:
        await self._write(_inventory.save_inventory, rows)

    async def load_inventory(self) -> list[InventoryRow]:
        return await self._read(_inventory.inventory_rows, None)

    # -- series (the console's charts) ---------------------------------------------------------

    async def add_series(self, counts: SeriesCounts, samples: Sequence[SeriesSample] = ()) -> None:
        await self._write(_series.add_series, counts, samples)

    async def read_series(self, series: str, since_ms: int, until_ms: int) -> dict[int, dict[str, int]]:
        return await self._read(_series.read_series, series, since_ms, until_ms)

    async def series_samples(self, series: str) -> list[SeriesSample]:
        return await self._read(_series.series_samples, series)

    # -- upkeep ------------------------------------------------------------------------------

    async def purge(self, destinations: Sequence[str]) -> int:
        """Delete messages every destination has that are past both the archive period and the
        dedup window, the dedup slices past the window, and series older than SERIES_KEEP_MS.
        Returns how many messages went."""
        delivered_up_to = min((self._cursors.get(d, self._head_seq) for d in destinations), default=self._head_seq)
        keep_secs = max(self._config.archive_secs, self._config.dedup_window_secs)
        now = self._now_ms()
        await self._write(_series.prune_series, now - SERIES_KEEP_MS)
        # A message whose key is in memory only must stay: it is where a restart finds the key.
        # A flush that fails (a full disk: it writes a page per random key) must not stop the
        # purge that frees the space: the messages past what was flushed simply stay.
        await self._flush_dedup_keys_or_log(force=True)
        delivered_up_to = min(delivered_up_to, self._dedup.flushed_seq)
        purged = await self._upkeep.purge(delivered_up_to, self._head_seq, now - keep_secs * 1000)
        await self._write(self._dedup.drop_expired, now, self._config.dedup_window_secs * 1000)
        return purged

    async def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking commits (PASSIVE), and re-measure
        the size on disk. Called often, so each checkpoint stays small. Past
        :data:`~gateway.log.sqlite._upkeep.WAL_RESTART_BYTES`, restart the WAL, which passive
        checkpoints never do while commits keep coming.

        After a failed commit, it also tries a small write: :meth:`writable` (``/ready``) is
        false until one goes through, and with ``/ready`` false no request may come to commit.
        """
        if self._last_commit_failed:
            with suppress(LogUnavailableError):
                await self._write(probe, self._now_ms())
                self._last_commit_failed = False
        await self._flush_dedup_keys_or_log()  # on a full disk, the checkpoint must still run
        self._disk_bytes, wal_in_use = await self._upkeep.checkpoint()
        await self._upkeep.restart_wal_if_due(wal_in_use)

    async def _flush_dedup_keys_or_log(self, *, force: bool = False) -> None:
        """:meth:`_flush_dedup_keys`, its failure logged: the keys stay in memory (and their
        messages in the log) for the next try."""
        try:
            await self._flush_dedup_keys(force=force)
        except LogUnavailableError as error:
            log.warning("dedup_flush_failed", reason=error.detail)

    async def _flush_dedup_keys(self, *, force: bool = False) -> None:
        """Write the dedup keys waiting in memory to their slice when enough have gathered (see
        gateway.log.sqlite._dedup), a chunk per transaction, commits going on in between."""
        if not force and not self._dedup.flush_due(self._now_ms()):
            return
        window_ms = self._config.dedup_window_secs * 1000
        while await self._write(self._dedup.flush_step, self._head_seq, self._now_ms(), window_ms):
            pass

    def writable(self) -> bool:
        return self.unavailable() is None

    def unavailable(self) -> LogUnavailableError | None:
        if self._closed:
            return LogUnavailableError("closed", "the gateway is shutting down")
        if self._disk_bytes >= self._full_at:
            return LogUnavailableError("log_full", self._full_text())
        if self._last_commit_failed:
            return self._last_failure or LogUnavailableError("log_error", "the last commit failed")
        return None

    def reconfigure(self, config: LogConfig) -> None:
        # engine and synchronous need a restart (the runtime refuses such a reload).
        self._config = config
        self._full_at = full_at(config.max_disk_bytes)

    def _full_text(self) -> str:
        return (
            f"the log holds {self._disk_bytes} bytes, at or past {self._full_at} "
            f"(log.max_disk_bytes {self._config.max_disk_bytes} less a reserve for the writes it cannot count ahead)"
        )

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
        for conn in self._connections:
            conn.close()

    # -- running statements --------------------------------------------------------------------

    async def _read(self, query: Callable[..., T], *args: object) -> T:
        """``query(reader connection, *args)`` in a worker thread, one read at a time."""
        return await trio.to_thread.run_sync(reading(query), self._reader, *args, limiter=self._read_lock)

    async def _write(self, write: Callable[..., T], *args: object) -> T:
        """``write(writer connection, *args)`` in a worker thread, between commits."""
        return await trio.to_thread.run_sync(writing(write), self._writer, *args, limiter=self._write_lock)
