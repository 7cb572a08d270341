"""The ingest log's record types and conventions, shared by the protocol and every engine:
entries, dead letters, books, tombstones, and the clock the log keeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, quote_plus

import msgspec


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """A message to append: its source, its dedup key, and its encoded body."""

    source: str
    message_id: str
    body: bytes


class SourceLetter(msgspec.Struct, frozen=True):
    """A message a source's filter failed on (stage ``source``), or raw input the source type
    could not turn into messages (stage ``raw``), to keep as a dead letter (it is never stored)."""

    destination: str  # source_letters(source)
    source: str
    body: bytes
    error: str
    stage: str = "source"


class AppendResult(msgspec.Struct, frozen=True):
    """What an append did: how many entries were stored and how many were duplicates, and
    which were (their positions in the entries given), so the console's debugger shows a
    duplicate as one and not as a second accepted call."""

    stored: int
    duplicates: int
    duplicate_positions: tuple[int, ...] = ()


#: Stages a dead letter comes from: ``send`` (the destination refused the batch: redrive sends
#: the stored body as it is), ``filter`` (a destination filter failed on it: redrive runs the
#: destination's filters again, then sends), ``source`` (a source filter failed on it before
#: it was stored: redrive runs the source's filters again, then stores it) and ``raw`` (input a
#: source type could not turn into messages, such as a webhook its function failed on: redrive
#: hands it back to the source type's ``redrive``, then checks and stores what that gives).
SEND_STAGE, FILTER_STAGE, SOURCE_STAGE, RAW_STAGE = "send", "filter", "source", "raw"


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


#: The per-minute series (the console's delivery charts) are kept this long, then pruned by
#: the log's upkeep (:meth:`gateway.log.IngestLog.purge`).
SERIES_KEEP_MS = 7 * 24 * 3_600_000
#: One bucket of a series: a minute.
SERIES_BUCKET_MS = 60_000


class SeriesSample(msgspec.Struct, frozen=True):
    """The latest occurrence of one ``kind`` of event in a series (a destination's latest
    error of a kind), as its owner encoded it in ``body``; the log keeps the newest per
    ``(series, kind)`` and never reads ``body``."""

    series: str
    kind: str
    at_ms: int
    body: bytes


#: Per-minute counters to add: (series, minute start in ms, metric) -> count.
SeriesCounts = Mapping[tuple[str, int, str], int]


class LogStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the log, for status output and metrics."""

    head_seq: int
    disk_bytes: int
    pending_messages: int
    commits: int
    cursors: dict[str, int]


class CursorBooks(msgspec.Struct, frozen=True):
    """One cursor's books as the log holds them (see :meth:`LogReader.books`).

    Attributes:
        destination: The cursor's name (a destination's id, or a replay's cursor).
        cursor: The last seq it has.
        start_seq: The head when it was created: it is responsible for every seq after.
        from_seq: Where these books start: ``start_seq``, or with ``since_ms`` the position
            the cursor had then (the last one it saved before).
        outcomes: source -> outcome -> messages, summed over the cursor's moves past
            ``from_seq`` (and what deletion requests booked above it).
        pending: source -> stored messages above ``cursor``.
        dead_letters_held: Its dead letters, held or marked for redrive.
    """

    destination: str
    cursor: int
    start_seq: int
    from_seq: int
    outcomes: dict[str, dict[str, int]]
    pending: dict[str, int]
    dead_letters_held: int


class LogBooks(msgspec.Struct, frozen=True):
    """Every book the log keeps, read at one moment: the raw numbers ``gateway audit`` reconciles.

    Attributes:
        head: The newest seq.
        cursors: Every cursor's books, by name.
        sources: source -> outcome -> messages (``stored``, ``duplicates``, ``filtered:<reason>``,
            ``dead_lettered``, ``suppressed``), from the hour that holds ``since_ms`` on.
        since_ms: What the books were asked from (None: from the start).
    """

    head: int
    cursors: list[CursorBooks]
    sources: dict[str, dict[str, int]]
    since_ms: int | None = None


def deleted_runs(deleted: list[tuple[int, str]], *, after: int) -> list[tuple[str, int, int]]:
    """``(source, count, last seq)`` of each run of consecutive seqs from one source in
    ``deleted`` (``(seq, source)``, sorted) above ``after``: how a deletion request books what
    it removed for a cursor below it (``filtered:deleted``, one outcome per run, at the run's
    last seq). No cursor can ever stop inside such a run (its seqs are gone), which is what
    keeps ``audit --since`` exact."""
    runs: list[tuple[str, int, int]] = []
    for seq, source in deleted:
        if seq <= after:
            continue
        if runs and runs[-1][0] == source and runs[-1][2] == seq - 1:
            runs[-1] = (source, runs[-1][1] + 1, seq)
        else:
            runs.append((source, 1, seq))
    return runs


def user_spellings(user_id: str) -> tuple[bytes, ...]:
    """How ``user_id`` can be spelled inside a sample of what was sent or received: as it is,
    JSON-escaped (once, and again inside a JSON string), and each of those URL-encoded (form
    bodies)."""
    once = msgspec.json.encode(user_id)[1:-1].decode()
    twice = msgspec.json.encode(once)[1:-1].decode()
    spellings = set()
    for text in (user_id, once, twice):
        spellings |= {text.encode(), quote(text, safe="").encode(), quote_plus(text).encode()}
    return tuple(s for s in spellings if s)


def mentions_user(body: bytes, spellings: tuple[bytes, ...]) -> bool:
    """Whether a diagnostic sample (an error sample, a debugger row) may hold a deleted user's
    data: it holds their userId in one of its :func:`user_spellings`. Such samples are dropped
    whole by a deletion request; erring towards dropping one too many costs only a sample."""
    return any(spelling in body for spelling in spellings)
