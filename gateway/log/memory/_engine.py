"""The memory engine's :class:`MemoryLog`: every write applied at once with no await in between (as
atomic as a SQLite transaction, durable in its :class:`MemoryStore` when it returns), and failures
simulated on demand."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from itertools import groupby, islice
from operator import attrgetter

import msgspec
import trio

from gateway.components import Record
from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import (
    SEND_STAGE,
    SERIES_KEEP_MS,
    TOMBSTONE_TYPE,
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
)
from gateway.log.memory._store import Cursor, MemoryStore, body_field


def trio_wall_clock_ms() -> Clock:
    """Milliseconds since the epoch that move with trio's clock: the wall clock when called,
    then whatever trio's clock says passed (under the autojump clock, a 300 s sleep moves
    ``received_at``, the dedup window and the archive period by 300 s). Call it inside ``trio.run``."""
    epoch_ms, start = time.time() * 1000, trio.current_time()
    return lambda: int(epoch_ms + (trio.current_time() - start) * 1000)


class MemoryLog:
    """:class:`gateway.log.IngestLog` in memory. Build it with :func:`open_memory_log`.

    Writes are checkpoints, like the SQLite engine's, and return once applied. Reads never
    see half a write. :meth:`fail_commits` makes writes fail as on a full disk or a locked file.
    """

    def __init__(self, config: LogConfig, store: MemoryStore, *, clock_ms: Clock) -> None:
        self.store = store
        self._config = config
        self._now_ms = clock_ms
        self.suppressed: frozenset[str] = frozenset(store.suppressions)
        self.deletions = 0
        # As in the SQLite engine: the highest seq each reader was handed (a record at or below
        # it and above its cursor may be in flight); reads without a name count for everyone.
        self._read_upto: dict[str, int] = {}
        self._read_upto_anyone = 0
        self._advanced = trio.Event()
        self._closed = False
        self._failure: LogUnavailableError | None = None
        self._last_commit_failed = False
        self._last_failure: LogUnavailableError | None = None
        self._commits = 0
        self._disk_bytes = store.measure()

    def fail_commits(self, reason: str | None = "disk_full") -> None:
        """From now on, writes fail with :class:`LogUnavailableError` ``reason`` (``disk_full``,
        ``busy``, ``log_error``) and store nothing, until called with None."""
        self._failure = None if reason is None else LogUnavailableError(reason, "simulated by MemoryLog.fail_commits")

    # -- the writes the SQLite engine commits in its group commits -------------------------

    async def append(
        self,
        entries: Sequence[Entry],
        *,
        letters: Sequence[SourceLetter] = (),
        tally: Mapping[tuple[str, str], int] | None = None,
        redriven: Sequence[int] = (),
    ) -> AppendResult:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refuse_when_closed()
        if self._disk_bytes >= self._config.max_disk_bytes:
            raise LogUnavailableError(
                "log_full",
                f"the log holds {self._disk_bytes} bytes, at or past log.max_disk_bytes "
                f"({self._config.max_disk_bytes}); waiting for delivery and purging to free space",
            )
        if len(entries) > self._config.max_pending_messages:
            raise LogUnavailableError("overloaded", "too many messages are waiting for a commit")
        if not entries and not letters and not tally and not redriven:
            return AppendResult(stored=0, duplicates=0)
        self._commit_or_fail()
        store, now, head = self.store, self._now_ms(), self.store.head
        window_ms = self._config.dedup_window_secs * 1000
        books: Counter[tuple[str, str]] = Counter()
        stored = 0
        position = 0
        duplicate_positions: list[int] = []
        # Runs of one source (a request's own messages, then what its filters forwarded), so
        # the books know each source's stored and duplicate counts.
        for source, run in groupby(entries, key=attrgetter("source")):
            run_entries = list(run)
            run_stored = 0
            for e in run_entries:
                if not store.is_duplicate(e.source, e.message_id, now, window_ms):
                    self._disk_bytes += store.add_row(e.source, e.message_id, now, e.body)
                    run_stored += 1
                else:
                    duplicate_positions.append(position)
                position += 1
            stored += run_stored
            if tally is not None:
                books[(source, "stored")] += run_stored
                books[(source, "duplicates")] += len(run_entries) - run_stored
        if tally:
            books.update(tally)
        for letter_id in redriven:
            store.letters.pop(letter_id, None)
        for x in letters:
            store.add_letter(x.destination, 0, x.source, x.body, x.error, 1, now, x.stage)
        for (source, outcome), n in books.items():
            if n:
                store.source_outcomes[(source, outcome, now // 3_600_000)] += n
        self._committed(head)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return AppendResult(
            stored=stored, duplicates=len(entries) - stored, duplicate_positions=tuple(duplicate_positions)
        )

    async def set_cursor(self, destination: str, seq: int, outcomes: Outcomes | None = None) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refuse_when_closed()
        self._commit_or_fail()
        now = self._now_ms()
        self.store.cursors.setdefault(destination, Cursor(seq, seq)).seq = seq
        self.store.outcomes.extend((destination, s, o, n, seq, now) for (s, o), n in (outcomes or {}).items())
        self._committed(self.store.head)
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- the other writes ----------------------------------------------------------------------

    async def cursor(self, destination: str, *, start_ms: int | None = None) -> int:
        await trio.lowlevel.checkpoint()
        store = self.store
        if destination not in store.cursors:
            # A new destination gets what arrives from now on, unless asked to replay the archive.
            start = store.head
            if start_ms is not None:
                first = store.first_seq_from(start_ms)
                start = first - 1 if first is not None else store.head
                if start < store.head:
                    # Messages a deletion request removed above it are booked as filtered:deleted.
                    self._write()
                    store.start_cursor(destination, start, self._now_ms())
                    return start
            await self.set_cursor(destination, start)
        return store.cursors[destination].seq

    async def hold(self, destination: str) -> int | None:
        """At once: one process writes a memory log."""
        await trio.lowlevel.checkpoint()
        cursor = self.store.cursors.get(destination)
        return cursor.seq if cursor is not None else None

    async def release(self, destination: str) -> None:
        await trio.lowlevel.checkpoint()

    async def forget_cursor(self, name: str) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        self.store.cursors.pop(name, None)
        self.store.outcomes = [row for row in self.store.outcomes if row[0] != name]
        self._read_upto.pop(name, None)

    async def add_dead_letters(
        self, destination: str, records: Sequence[Record], error: str, attempts: int, *, stage: str = SEND_STAGE
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        now = self._now_ms()
        for r in records:
            row = self.store.rows.get(r.seq) if r.seq else None
            # A record read before its user was deleted: its row is a tombstone now, and its
            # personal data must not come back as a dead letter.
            if row is None or body_field(row.body, "type") != TOMBSTONE_TYPE:
                self.store.add_letter(destination, r.seq, r.source, r.body, error, attempts, now, stage)

    async def finish_redrive(
        self,
        destination: str,
        delivered: Sequence[tuple[int, Record]],
        failed: Sequence[int],
        error: str,
        *,
        dropped: Sequence[int] = (),
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        store, now = self.store, self._now_ms()
        for letter_id in [i for i, _ in delivered] + list(dropped):
            store.letters.pop(letter_id, None)
        for letter_id in failed:
            if (letter := store.letters.get(letter_id)) is not None:
                letter.state, letter.error, letter.attempts, letter.failed_at = "dead", error, letter.attempts + 1, now
        # A source's letters (seq 0) are in no destination's books: they were never stored.
        counts = Counter(record.source for _, record in delivered if record.seq)
        cursor = store.cursors[destination].seq if destination in store.cursors else 0
        store.outcomes.extend((destination, source, "redriven", n, cursor, now) for source, n in counts.items())

    async def change_dead_letters(self, action: str, *, destination: str | None = None, ids: Sequence[int] = ()) -> int:
        await trio.lowlevel.checkpoint()
        if action not in ("redrive", "discard"):
            raise ValueError(f"unknown action {action!r}")
        if not ids and not destination:
            raise ValueError("choose dead letters by ids or by destination")
        self._write()
        chosen = {int(i) for i in ids}
        changed = [
            x
            for x in self.store.letters.values()
            if x.state == "dead" and (x.id in chosen if ids else x.destination == destination)
        ]
        for letter in changed:
            if action == "redrive":
                letter.state = "redrive"
            else:
                del self.store.letters[letter.id]
        return len(changed)

    async def set_suppressed(self, user_id: str, suppressed: bool) -> bool:
        await trio.lowlevel.checkpoint()
        self._write()
        suppressions = self.store.suppressions
        changed = (user_id in suppressions) != suppressed
        if suppressed:
            suppressions.setdefault(user_id, self._now_ms())
        else:
            suppressions.pop(user_id, None)
        self.suppressed = self.suppressed | {user_id} if suppressed else self.suppressed - {user_id}
        return changed

    async def delete_user(self, user_id: str, destinations: Sequence[str]) -> DeletionReport:
        """As the SQLite engine does it (see ``SQLiteLog.delete_user``): rows no worker can hold
        are deleted, the newest row and rows a worker has read become tombstones, and what a
        cursor had not reached is booked for it as ``filtered:deleted``, all in one step."""
        await trio.lowlevel.checkpoint()
        self._write()
        # (cursor, horizon]: what each destination may have in flight.
        windows = [
            (c.seq, max(c.seq, self._read_upto.get(name, 0), self._read_upto_anyone))
            for name, c in self.store.cursors.items()
        ]
        report = self.store.delete_user(user_id, windows, destinations, self._now_ms())
        self.deletions += 1
        return report

    async def save_inventory(self, rows: Sequence[InventoryRow]) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        for row in rows:
            old = self.store.inventory.get((row.source, row.path))
            if old is not None:
                first, last = min(old.first_seen, row.first_seen), max(old.last_seen, row.last_seen)
                row = msgspec.structs.replace(row, first_seen=first, last_seen=last)
            self.store.inventory[(row.source, row.path)] = row

    async def purge(self, destinations: Sequence[str]) -> int:
        await trio.lowlevel.checkpoint()
        store, head = self.store, self.store.head
        delivered_up_to = min((store.position(d) for d in destinations), default=head)
        cutoff = self._now_ms() - max(self._config.archive_secs, self._config.dedup_window_secs) * 1000
        self._write()
        series_cutoff = self._now_ms() - SERIES_KEEP_MS
        for key in [key for key in store.series if key[1] < series_cutoff]:
            del store.series[key]
        for kind in [kind for kind, sample in store.series_samples.items() if sample.at_ms < series_cutoff]:
            del store.series_samples[kind]
        return store.purge(delivered_up_to, cutoff)

    async def add_series(self, counts: SeriesCounts, samples: Sequence[SeriesSample] = ()) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        store = self.store
        for (series, minute, metric), count in counts.items():
            if count:
                store.series.setdefault((series, minute), Counter())[metric] += count
        for sample in samples:
            kept = store.series_samples.get((sample.series, sample.kind))
            if kept is None or kept.at_ms <= sample.at_ms:
                store.series_samples[(sample.series, sample.kind)] = sample

    async def read_series(self, series: str, since_ms: int, until_ms: int) -> dict[int, dict[str, int]]:
        await trio.lowlevel.checkpoint()
        return {
            minute: dict(counts)
            for (name, minute), counts in sorted(self.store.series.items())
            if name == series and since_ms <= minute < until_ms and counts
        }

    async def series_samples(self, series: str) -> list[SeriesSample]:
        await trio.lowlevel.checkpoint()
        found = [sample for (name, _), sample in self.store.series_samples.items() if name == series]
        return sorted(found, key=lambda sample: sample.at_ms, reverse=True)

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()
        self._disk_bytes = self.store.measure()
        if self._last_commit_failed and self._failure is None and not self._closed:
            self._last_commit_failed = False  # the probe commit went through: writes work again

    # -- reads ----------------------------------------------------------------------------

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        await trio.lowlevel.checkpoint()
        records: list[Record] = []
        size = 0
        for row in self.store.rows_after(after_seq, max_records):
            size += len(row.body)
            if records and size > max_bytes:
                break
            records.append(Record(seq=row.seq, source=row.source, body=row.body, received_at=row.received_at))
        if records:
            last = records[-1].seq
            if reader is None:
                self._read_upto_anyone = max(self._read_upto_anyone, last)
            elif last > self._read_upto.get(reader, 0):
                self._read_upto[reader] = last
        return records

    def head(self) -> int:
        return self.store.head

    async def wait_for_records(self, after_seq: int) -> None:
        while self.store.head <= after_seq:
            await self._advanced.wait()

    async def cursors(self) -> dict[str, tuple[int, int]]:
        await trio.lowlevel.checkpoint()
        return {name: (c.seq, c.start_seq) for name, c in self.store.cursors.items()}

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        await trio.lowlevel.checkpoint()
        return self.store.seq_range(since_ms, until_ms)

    async def take_redrive(self, destination: str, limit: int) -> list[tuple[int, Record, str]]:
        await trio.lowlevel.checkpoint()
        letters = (x for x in self.store.letters_in_order() if x.destination == destination and x.state == "redrive")
        return [(x.id, Record(seq=x.seq, source=x.source, body=x.body), x.stage) for x in islice(letters, limit)]

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        letters = (x for x in self.store.letters_in_order() if not destination or x.destination == destination)
        return [
            DeadLetter(
                x.id, x.destination, x.seq, x.source, x.body, x.error, x.attempts, x.failed_at / 1000, x.state, x.stage
            )
            for x in islice(letters, limit)
        ]

    async def load_inventory(self) -> list[InventoryRow]:
        await trio.lowlevel.checkpoint()
        return [self.store.inventory[key] for key in sorted(self.store.inventory)]

    async def books(self, since_ms: int | None = None) -> LogBooks:
        await trio.lowlevel.checkpoint()
        return self.store.books(since_ms)

    async def backlog(self, destinations: Sequence[str]) -> list[BacklogInfo]:
        await trio.lowlevel.checkpoint()
        return self.store.backlog({d: self.store.position(d) for d in destinations})

    # -- state ----------------------------------------------------------------------------

    def writable(self) -> bool:
        return self.unavailable() is None

    def unavailable(self) -> LogUnavailableError | None:
        if self._closed:
            return LogUnavailableError("closed", "the gateway is shutting down")
        if self._disk_bytes >= self._config.max_disk_bytes:
            return LogUnavailableError(
                "log_full", f"the log holds {self._disk_bytes} bytes, at or past log.max_disk_bytes"
            )
        if self._last_commit_failed:
            return self._last_failure or LogUnavailableError("log_error", "the last commit failed")
        return None

    def reconfigure(self, config: LogConfig) -> None:
        self._config = config

    def statistics(self) -> LogStatistics:
        return LogStatistics(
            head_seq=self.store.head,
            disk_bytes=self._disk_bytes,
            pending_messages=0,
            commits=self._commits,
            cursors={name: c.seq for name, c in self.store.cursors.items()},
        )

    async def aclose(self) -> None:
        """Refuse writes from now on (nothing is ever queued)."""
        await trio.lowlevel.checkpoint()
        self._closed = True

    def _refuse_when_closed(self) -> None:
        if self._closed:
            raise LogUnavailableError("closed", "the gateway is shutting down")

    def _commit_or_fail(self) -> None:
        """A failed commit makes :meth:`writable` false until a commit (or the probe in
        :meth:`checkpoint`) goes through, as in the SQLite engine."""
        if self._failure is not None:
            self._last_commit_failed = True
            self._last_failure = self._failure
            raise self._failure

    def _committed(self, head_before: int) -> None:
        self._last_commit_failed = False
        self._commits += 1
        if self.store.head > head_before:
            self._advanced.set()
            self._advanced = trio.Event()

    def _write(self) -> None:
        """Before a write outside the commits: refused when closed or failing (the SQLite
        engine's such writes fail alone, without making the log unwritable)."""
        self._refuse_when_closed()
        if self._failure is not None:
            raise self._failure


@asynccontextmanager
async def open_memory_log(
    config: LogConfig | None = None, store: MemoryStore | None = None, *, clock_ms: Clock | None = None
) -> AsyncIterator[MemoryLog]:
    """A memory log on ``store`` (a new one when None; pass the same store again to "restart").
    ``clock_ms`` defaults to :func:`trio_wall_clock_ms`.

    Resource handling:
        On exit, the log refuses writes; the store keeps everything committed.
    """
    log = MemoryLog(config or LogConfig(), store or MemoryStore(), clock_ms=clock_ms or trio_wall_clock_ms())
    try:
        yield log
    finally:
        log._closed = True


@asynccontextmanager
async def open_memory_reader(store: MemoryStore) -> AsyncIterator[MemoryLog]:
    """A read-only view of ``store`` (its writes answer ``closed``): the memory engine's
    counterpart of :func:`gateway.log.open_log_reader`."""
    async with open_memory_log(store=store, clock_ms=lambda: 0) as log:
        log._closed = True
        yield log
