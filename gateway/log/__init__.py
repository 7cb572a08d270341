"""The ingest log: durable, deduplicating, append-only storage of accepted messages.

Every accepted message is appended here before its request is answered; every destination reads
it back through its own persisted cursor. :class:`IngestLog` is the interface the rest of the
gateway uses, so another engine (Redis Streams, PostgreSQL) can replace the embedded SQLite one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import msgspec

from gateway.components import Record
from gateway.config import LogConfig


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """A message to append: its source, its dedup key, and its encoded body."""

    source: str
    message_id: str
    body: bytes


class SourceLetter(msgspec.Struct, frozen=True):
    """A message a source's filter failed on, to keep as a dead letter (it is never stored)."""

    destination: str  # source_letters(source)
    source: str
    body: bytes
    error: str


class AppendResult(msgspec.Struct, frozen=True):
    """What an append did: how many entries were stored and how many were duplicates."""

    stored: int
    duplicates: int


#: Stages a dead letter comes from: ``send`` (the destination refused the batch: redrive sends
#: the stored body as it is), ``filter`` (a destination filter failed on it: redrive runs the
#: destination's filters again, then sends) and ``source`` (a source filter failed on it before
#: it was stored: redrive runs the source's filters again, then stores it).
SEND_STAGE, FILTER_STAGE, SOURCE_STAGE = "send", "filter", "source"


#: Outcome counts of a run of batches: (source, outcome) -> messages. Outcomes are ``delivered``,
#: ``dead_lettered``, ``filtered:<reason>`` (see README: Configuration), ``filtered:deleted`` (removed by a deletion
#: request) and ``redriven`` (a dead letter delivered later).
Outcomes = dict[tuple[str, str], int]
DELETED_OUTCOME = "filtered:deleted"
#: A deleted user's message whose row must stay (its seq may not be reused, or a worker has
#: read it): the body is replaced by :func:`tombstone`, and workers count it as ``filtered:deleted``.
TOMBSTONE_TYPE = "deleted"


def tombstone(message_id: str) -> bytes:
    """The body a deleted message's row keeps when the row itself must stay."""
    return msgspec.json.encode({"messageId": message_id, "type": TOMBSTONE_TYPE})


#: Where a log engine takes the time from: milliseconds since the epoch (``received_at``,
#: the dedup window and the archive period are measured with it). Tests inject their own.
Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """The system's clock, in milliseconds since the epoch (the engines' default)."""
    return int(time.time() * 1000)


def source_letters(source_id: str) -> str:
    """The ``destination`` under which the dead letters of a source's filters are kept."""
    return f"source:{source_id}"


class DeadLetter(msgspec.Struct, frozen=True):
    """A record a destination refused for good, or a filter failed on, with the reason."""

    id: int
    destination: str
    seq: int
    source: str
    body: bytes
    error: str
    attempts: int
    failed_at: float
    state: str = "dead"
    stage: str = SEND_STAGE


class BacklogInfo(msgspec.Struct, frozen=True):
    """What waits for one destination."""

    destination: str
    messages: int
    bytes_estimate: int
    oldest_received_at: float


class DeletionReport(msgspec.Struct, frozen=True):
    """What :meth:`IngestLog.delete_user` removed for one userId.

    Attributes:
        messages_deleted: Rows deleted outright.
        tombstoned: Rows whose body became ``{"messageId": ..., "type": "deleted"}`` instead: the
            newest row (its seq must never be reused) and rows a worker had already read.
        dead_letters_deleted: The user's dead letters, every destination.
        pending: Per destination asked about, how many of the removed messages it had not
            been sent yet (they never will be).
    """

    user_id: str
    messages_deleted: int
    tombstoned: int
    dead_letters_deleted: int
    pending: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def messages_removed(self) -> int:
        return self.messages_deleted + self.tombstoned


class InventoryRow(msgspec.Struct, frozen=True):
    """One field path a source sent: its most severe class, the matchers that recognised it,
    and when it was first and last seen (milliseconds since the epoch). Never a value."""

    source: str
    path: str
    cls: str
    hits: tuple[str, ...]
    first_seen: int
    last_seen: int


class LogStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the log, for status output and metrics."""

    head_seq: int
    disk_bytes: int
    pending_messages: int
    commits: int
    cursors: dict[str, int]


class IngestLog(Protocol):
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

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        """Return stored records with ``seq > after_seq`` in order, at most ``max_records``
        and (beyond the first record) at most ``max_bytes`` of bodies. ``reader`` names the
        destination reading (so a deletion knows which records may be in flight to it)."""
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

    async def cursors(self) -> dict[str, tuple[int, int]]:
        """Every persisted cursor: name -> (seq, start_seq)."""
        ...

    async def forget_cursor(self, name: str) -> None:
        """Remove a cursor and its delivery books (a finished replay's)."""
        ...

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        """``(after, upto)``: the stored messages received in ``[since_ms, until_ms)`` (until
        now when None) are those with ``after < seq <= upto`` (``after == upto``: none)."""
        ...

    async def set_cursor(self, destination: str, seq: int, outcomes: dict[tuple[str, str], int] | None = None) -> None:
        """Persist that ``destination`` has every record up to ``seq``, together with what
        happened to the records it moved over: ``(source, outcome) -> count``."""
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

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters in the order they were added, all or one ``destination``'s."""
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
        are the ones :attr:`DeletionReport.pending` reports on."""
        ...

    async def save_inventory(self, rows: Sequence[InventoryRow]) -> None:
        """Insert or update field-inventory rows (first_seen keeps the earliest)."""
        ...

    async def load_inventory(self) -> list[InventoryRow]:
        """Every field-inventory row saved so far."""
        ...

    async def purge(self, destinations: Sequence[str]) -> int:
        """Delete what every one of ``destinations`` has and what is past both the archive
        period and the dedup window; return how many messages went."""
        ...

    async def checkpoint(self) -> None:
        """Fold recent writes into the main store and re-measure the size on disk (cheap;
        called every second or so)."""
        ...

    async def backlog(self, destinations: Sequence[str]) -> list[BacklogInfo]:
        """How much waits for each destination (bytes estimated from a sample of the rows)."""
        ...

    def writable(self) -> bool:
        """Whether the log takes writes now (not closed, not full, last commit succeeded)."""
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
    from gateway.log.sqlite import open_sqlite_log

    async with open_sqlite_log(config, data_dir, observe_commit=observe_commit, clock_ms=clock_ms) as log:
        yield log
