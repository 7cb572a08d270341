"""The ingest log: durable, deduplicating, append-only storage of accepted messages.

Every accepted message is appended here before its request is answered; every destination reads
it back through its own persisted cursor. :class:`IngestLog` is the interface the rest of the
gateway uses, so another engine (Redis Streams, PostgreSQL) can replace the embedded SQLite one;
``gateway.log.redis`` is the one many gateways share, ``gateway.log.memory`` is one for tests,
and tests/log_conformance.py holds them all to it.

May import gateway.config, gateway.components and the base modules; never a stage, the privacy
classifier or the kit. Nothing outside gateway.log imports an engine, sqlite3 or redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from gateway.components import Record
from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log._records import (
    DELETED_OUTCOME,
    FILTER_STAGE,
    RAW_STAGE,
    SEND_STAGE,
    SERIES_BUCKET_MS,
    SERIES_KEEP_MS,
    SOURCE_STAGE,
    TOMBSTONE_TYPE,
    AppendResult,
    BacklogInfo,
    Clock,
    CursorBooks,
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
    deleted_runs,
    mentions_user,
    source_letters,
    tombstone,
    user_spellings,
    wall_clock_ms,
)

__all__ = [
    "DELETED_OUTCOME",
    "FILTER_STAGE",
    "RAW_STAGE",
    "SEND_STAGE",
    "SERIES_BUCKET_MS",
    "SERIES_KEEP_MS",
    "SOURCE_STAGE",
    "TOMBSTONE_TYPE",
    "AppendResult",
    "BacklogInfo",
    "Clock",
    "CursorBooks",
    "DeadLetter",
    "DeletionReport",
    "Entry",
    "IngestLog",
    "InventoryRow",
    "LogBooks",
    "LogReader",
    "LogStatistics",
    "Outcomes",
    "SeriesCounts",
    "SeriesSample",
    "SourceLetter",
    "deleted_runs",
    "mentions_user",
    "open_log",
    "open_log_reader",
    "source_letters",
    "tombstone",
    "user_spellings",
    "wall_clock_ms",
]


class LogReader(Protocol):
    """The read side of the log: what the offline commands need, with the daemon up or down
    (:func:`open_log_reader`), and what :class:`IngestLog` offers on top of its writes."""

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        """Return stored records with ``seq > after_seq`` in order, at most ``max_records``
        and (beyond the first record) at most ``max_bytes`` of bodies. ``reader`` names the
        destination reading (so a deletion knows which records may be in flight to it)."""
        ...

    async def cursors(self) -> dict[str, tuple[int, int]]:
        """Every persisted cursor: name -> (seq, start_seq)."""
        ...

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        """``(after, upto)``: the stored messages received in ``[since_ms, until_ms)`` (until
        now when None) are those with ``after < seq <= upto`` (``after == upto``: none)."""
        ...

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters in the order they were added, all or one ``destination``'s."""
        ...

    async def load_inventory(self) -> list[InventoryRow]:
        """Every field-inventory row saved so far, by source and path."""
        ...

    async def books(self, since_ms: int | None = None) -> LogBooks:
        """Every cursor's and every source's books, all read at one moment (a consistent
        snapshot, so they balance while the daemon writes). With ``since_ms``, each cursor's
        books start where it was then, and the sources' from the hour that holds it."""
        ...


class IngestLog(LogReader, Protocol):
    """The operations the gateway needs from a log engine."""

    #: userIds whose events are dropped at ingest; kept in memory, persisted by set_suppressed.
    suppressed: frozenset[str]
    #: Deletion requests carried out since the log was opened. A worker holding records read
    #: before it changed reads them again (they may be tombstones now) before sending them.
    deletions: int

    async def set_suppressed(self, user_id: str, suppressed: bool) -> bool:
        """Add or remove a suppressed userId (persistently); returns whether anything changed."""
        ...

    async def append(
        self,
        entries: Sequence[Entry],
        *,
        letters: Sequence[SourceLetter] = (),
        tally: Mapping[tuple[str, str], int] | None = None,
        redriven: Sequence[int] = (),
    ) -> AppendResult:
        """Store the entries durably, skipping (source, message_id) pairs seen within the dedup
        window, and return once they are on disk.

        In the same commit: ``letters`` go to the dead-letter table, and, when ``tally`` is
        given, the sources' books count the entries stored and duplicated per source and the
        ``tally`` counts ((source, outcome) -> messages: ``filtered:<reason>``,
        ``dead_lettered``, ``suppressed``; negative counts move messages between outcomes), and
        the dead letters ``redriven`` (ids) are deleted, so the books are exact across crashes.

        Raises:
            gateway.errors.LogUnavailableError: the log cannot take writes now; nothing was stored.
        """
        ...

    def head(self) -> int:
        """The seq of the newest stored record (0 when none ever was)."""
        ...

    async def wait_for_records(self, after_seq: int) -> None:
        """Return once a record with ``seq > after_seq`` is stored."""
        ...

    async def cursor(self, destination: str, *, start_ms: int | None = None) -> int:
        """The last seq ``destination`` has. A new destination starts at the current head, or,
        with ``start_ms``, before the first message the log still holds from that time on."""
        ...

    async def hold(self, destination: str) -> int | None:
        """Wait until this gateway may move ``destination``'s cursor, and hold it until
        :meth:`release`; returns the cursor's position then (None: it was forgotten meanwhile).

        A log several gateways share lets one of them at a time hold a cursor, and renews the
        hold while this gateway lives; a gateway that dies (or is cut off) for ``log.lease_secs``
        loses it, and another takes the destination over from the saved cursor. A log only one
        process writes (SQLite, memory) returns at once.
        """
        ...

    async def release(self, destination: str) -> None:
        """Stop holding ``destination``'s cursor (its worker stopped), so another gateway may
        take it over at once."""
        ...

    async def forget_cursor(self, name: str) -> None:
        """Remove a cursor and its delivery books (a finished replay's)."""
        ...

    async def set_cursor(self, destination: str, seq: int, outcomes: dict[tuple[str, str], int] | None = None) -> None:
        """Persist that ``destination`` has every record up to ``seq``, together with what
        happened to the records it moved over: ``(source, outcome) -> count``.

        Raises:
            gateway.errors.CursorLostError: another gateway holds the cursor now (see
                :meth:`hold`); nothing was saved.
            gateway.errors.LogUnavailableError: the log cannot take writes now.
        """
        ...

    async def take_redrive(self, destination: str, limit: int) -> list[tuple[int, Record, str]]:
        """Dead letters marked for sending again to ``destination``: ``(id, record, stage)``."""
        ...

    async def finish_redrive(
        self,
        destination: str,
        delivered: Sequence[tuple[int, Record]],
        failed: Sequence[int],
        error: str,
        *,
        dropped: Sequence[int] = (),
    ) -> None:
        """Forget redriven letters the destination took (booked as ``redriven``) and the ones
        the filters now drop (``dropped``: booked nowhere, counted by the filters); hold the
        refused ones again."""
        ...

    async def change_dead_letters(self, action: str, *, destination: str | None = None, ids: Sequence[int] = ()) -> int:
        """Mark dead letters for ``redrive`` or ``discard`` them; returns how many changed."""
        ...

    async def add_dead_letters(
        self, destination: str, records: Sequence[Record], error: str, attempts: int, *, stage: str = SEND_STAGE
    ) -> None:
        """Keep records a destination refused for good (or a filter failed on), with the error."""
        ...

    async def delete_user(self, user_id: str, destinations: Sequence[str]) -> DeletionReport:
        """Remove every message and dead letter whose ``userId`` is ``user_id``, in one
        transaction, and record the request. A removed message a destination had not reached
        is booked for it as ``filtered:deleted``, so the audit stays exact; ``destinations``
        are the ones :attr:`DeletionReport.pending` reports on. The series samples that
        :func:`mentions_user` go too (an error sample holds the event that was sent)."""
        ...

    async def save_inventory(self, rows: Sequence[InventoryRow]) -> None:
        """Insert or update field-inventory rows (first_seen keeps the earliest)."""
        ...

    async def add_series(self, counts: SeriesCounts, samples: Sequence[SeriesSample] = ()) -> None:
        """Add ``counts`` to the per-minute counters of the series they name (the console's
        delivery charts; counters of several gateways on one log add up), and keep each of
        ``samples`` unless a newer one of its ``(series, kind)`` is kept already.

        Raises:
            gateway.errors.LogUnavailableError: nothing was added (the caller keeps them).
        """
        ...

    async def read_series(self, series: str, since_ms: int, until_ms: int) -> dict[int, dict[str, int]]:
        """The counters of ``series`` in the minutes that start in ``[since_ms, until_ms)``:
        minute start (ms) -> metric -> count; minutes with nothing are left out."""
        ...

    async def series_samples(self, series: str) -> list[SeriesSample]:
        """The latest sample of each kind kept for ``series``, newest first."""
        ...

    async def purge(self, destinations: Sequence[str]) -> int:
        """Delete what every one of ``destinations`` has and what is past both the archive
        period and the dedup window; return how many messages went. Series counters and
        samples older than :data:`SERIES_KEEP_MS` go too."""
        ...

    async def checkpoint(self) -> None:
        """Fold recent writes into the main store and re-measure the size on disk (cheap;
        called every second or so); after a failed commit, find out whether writes work again."""
        ...

    async def backlog(self, destinations: Sequence[str]) -> list[BacklogInfo]:
        """How much waits for each destination (bytes estimated from a sample of the rows)."""
        ...

    def writable(self) -> bool:
        """Whether the log takes writes now: not closed, not full, and the last commit went
        through (after a failed one, :meth:`checkpoint` tries again, so it comes back promptly)."""
        ...

    def unavailable(self) -> LogUnavailableError | None:
        """Why the log does not take writes now (see :meth:`writable`), or None when it does:
        ``closed``, ``log_full`` (``log.max_disk_bytes``), or the last commit's failure
        (``disk_full``...). ``/ready`` gives it as its reason."""
        ...

    def reconfigure(self, config: LogConfig) -> None:
        """Apply new limits (dedup window, archive period, size bound) from a reloaded config."""
        ...

    def statistics(self) -> LogStatistics:
        """A snapshot of the log's state."""
        ...


@asynccontextmanager
async def open_log(
    config: LogConfig,
    data_dir: Path,
    *,
    observe_commit: Callable[[float], None] | None = None,
    clock_ms: Clock = wall_clock_ms,
) -> AsyncIterator[IngestLog]:
    """Open the log engine named by ``config.engine`` under ``data_dir``; ``observe_commit``
    is called with the duration of every commit, in seconds; ``clock_ms`` is the time the log
    keeps (received_at, the dedup window, the archive period).

    Resource handling:
        Appends in flight when the context exits are committed before it returns.
    """
    if config.engine == "redis":
        from gateway.log.redis import open_redis_log

        async with open_redis_log(config, observe_commit=observe_commit, clock_ms=clock_ms) as redis_log:
            yield redis_log
        return
    from gateway.log.sqlite import open_sqlite_log

    async with open_sqlite_log(config, data_dir, observe_commit=observe_commit, clock_ms=clock_ms) as log:
        yield log


@asynccontextmanager
async def open_log_reader(config: LogConfig, data_dir: Path) -> AsyncIterator[LogReader]:
    """A read-only view of the log ``config`` names under ``data_dir``, for the commands that
    read it with the daemon up or down (``gateway audit``, ``gateway privacy inventory``).

    Raises:
        gateway.errors.LogUnavailableError: there is no log there (``missing``). Saying
            "nothing to report" instead would pass off a wrong data_dir as a clean bill.
        gateway.errors.LogUnreadableError: the log's storage cannot be read (from its methods).
    """
    if config.engine == "redis":
        from gateway.log.redis import open_redis_reader

        async with open_redis_reader(config) as redis_reader:
            yield redis_reader
        return
    from gateway.log.sqlite import open_sqlite_reader

    async with open_sqlite_reader(data_dir) as reader:
        yield reader
