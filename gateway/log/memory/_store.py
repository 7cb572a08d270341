"""What the memory engine has committed (all a restart would find), and the reads over it: rows
after a seq, time ranges, the books, the backlog. The SQLite engine's tables, as Python objects."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.log import (
    DELETED_OUTCOME,
    SEND_STAGE,
    BacklogInfo,
    CursorBooks,
    DeletionReport,
    InventoryRow,
    LogBooks,
    SeriesSample,
    deleted_runs,
    mentions_user,
    tombstone,
    user_spellings,
)

_ROW_OVERHEAD = 64  # what a row costs beside its body, as the SQLite engine estimates it


@dataclass(slots=True)
class Row:
    seq: int
    source: str
    message_id: str
    received_at: int
    body: bytes


@dataclass(slots=True)
class Letter:
    id: int
    destination: str
    seq: int
    source: str
    body: bytes
    error: str
    attempts: int
    failed_at: int
    state: str = "dead"
    stage: str = SEND_STAGE


@dataclass(slots=True)
class Cursor:
    seq: int
    start_seq: int


#: A delivery outcome row: (destination, source, outcome, count, upto_seq, at).
OutcomeRow = tuple[str, str, str, int, int, int]


@dataclass(slots=True)
class MemoryStore:
    """Everything a memory log committed. Open another log on the same store to see what a
    restart would find (after a close, or after a "crash": abandoning the log mid-way).

    Attributes:
        rows: The messages by seq; ``order`` holds their seqs, sorted.
        keys: The dedup keys, (source, message_id) -> the seq of the newest copy stored, as long
            as that row is there; a key counts within the dedup window only (:meth:`is_duplicate`).
        cursors: name -> position and start.
        outcomes: Delivery outcomes, written with the cursor moves and by deletion requests.
        letters: Dead letters by id (ids are never reused).
        suppressions: userId -> when it was suppressed.
        deletion_requests: (userId, at, deleted, tombstoned, dead letters deleted).
        deleted_seqs: Seqs a deletion request removed -> their source (for replays of the archive).
        source_outcomes: The sources' books: (source, outcome, hour) -> messages.
        inventory: The privacy field inventory by (source, path).
        series: The per-minute series counters by (series, minute start).
        series_samples: The latest sample by (series, kind).
    """

    rows: dict[int, Row] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    outcomes: list[OutcomeRow] = field(default_factory=list)
    letters: dict[int, Letter] = field(default_factory=dict)
    last_letter_id: int = 0
    suppressions: dict[str, int] = field(default_factory=dict)
    deletion_requests: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    deleted_seqs: dict[int, str] = field(default_factory=dict)
    source_outcomes: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    inventory: dict[tuple[str, str], InventoryRow] = field(default_factory=dict)
    series: dict[tuple[str, int], Counter[str]] = field(default_factory=dict)
    series_samples: dict[tuple[str, str], SeriesSample] = field(default_factory=dict)

    @property
    def head(self) -> int:
        """The newest row's seq (it is never deleted, so no seq is reused)."""
        return self.order[-1] if self.order else 0

    def measure(self) -> int:
        """The bytes the store holds, as a size on disk would count them."""
        rows = sum(len(r.body) + _ROW_OVERHEAD for r in self.rows.values())
        return rows + sum(len(x.body) + _ROW_OVERHEAD for x in self.letters.values())

    def add_row(self, source: str, message_id: str, received_at: int, body: bytes) -> int:
        """Store a message as the new head; returns its size estimate."""
        seq = self.head + 1
        self.rows[seq] = Row(seq, source, message_id, received_at, body)
        self.order.append(seq)
        self.keys[(source, message_id)] = seq
        return len(body) + _ROW_OVERHEAD

    def is_duplicate(self, source: str, message_id: str, now: int, window_ms: int) -> bool:
        """Whether a copy of the key was stored at most ``window_ms`` before ``now``."""
        seq = self.keys.get((source, message_id))
        return seq is not None and now - self.rows[seq].received_at <= window_ms

    def remove_rows(self, seqs: Iterable[int]) -> None:
        """Delete rows and their dedup keys (unless a later copy holds the key)."""
        for seq in seqs:
            row = self.rows.pop(seq)
            if self.keys.get((row.source, row.message_id)) == seq:
                del self.keys[(row.source, row.message_id)]
        self.order = [seq for seq in self.order if seq in self.rows]

    def start_cursor(self, destination: str, start: int, now: int) -> None:
        """A destination that replays the archive from ``start``: messages a deletion request
        removed above it are booked as ``filtered:deleted`` with its cursor."""
        self.cursors[destination] = Cursor(start, start)
        deleted = sorted((seq, source) for seq, source in self.deleted_seqs.items() if seq > start)
        for source, n, upto in deleted_runs(deleted, after=start):
            self.outcomes.append((destination, source, DELETED_OUTCOME, n, upto, now))

    def delete_user(
        self, user_id: str, windows: list[tuple[int, int]], destinations: Sequence[str], now: int
    ) -> DeletionReport:
        """Remove the user's rows and dead letters: a row in one of the ``windows`` (what a
        destination may have in flight) or the newest row becomes a tombstone, the others go,
        and what a cursor had not reached is booked for it as ``filtered:deleted``."""
        head = self.head
        rows = [self.rows[seq] for seq in self.order if body_field(self.rows[seq].body, "userId") == user_id]
        deleted: list[tuple[int, str]] = []
        kept = 0
        for row in rows:
            if row.seq == head or any(low < row.seq <= high for low, high in windows):
                message_id = body_field(row.body, "messageId")
                row.body = tombstone(message_id if message_id is not None else row.message_id)
                kept += 1
            else:
                deleted.append((row.seq, row.source))
                self.deleted_seqs.setdefault(row.seq, row.source)
        self.remove_rows(seq for seq, _ in deleted)
        letters = [x.id for x in self.letters.values() if body_field(x.body, "userId") == user_id]
        for letter_id in letters:
            del self.letters[letter_id]
        spellings = user_spellings(user_id)
        for key in [key for key, sample in self.series_samples.items() if mentions_user(sample.body, spellings)]:
            del self.series_samples[key]
        for name, c in self.cursors.items():
            for source, n, upto in deleted_runs(deleted, after=c.seq):
                self.outcomes.append((name, source, DELETED_OUTCOME, n, upto, now))
        self.deletion_requests.append((user_id, now, len(deleted), kept, len(letters)))
        pending = {d: sum(1 for r in rows if r.seq > self.position(d)) for d in destinations}
        return DeletionReport(user_id, len(deleted), kept, len(letters), pending)

    def purge(self, delivered_up_to: int, cutoff_ms: int) -> int:
        """Delete rows up to ``delivered_up_to`` received before ``cutoff_ms``, never the newest
        (so a seq is never reused); returns how many went."""
        candidates = self.order[: bisect_right(self.order, min(delivered_up_to, self.head - 1))]
        gone = [seq for seq in candidates if self.rows[seq].received_at < cutoff_ms]
        if gone:
            self.remove_rows(gone)
            # No destination can start below the oldest message left, so older holes are moot.
            self.deleted_seqs = {seq: s for seq, s in self.deleted_seqs.items() if seq >= self.order[0]}
        return len(gone)

    def add_letter(
        self, destination: str, seq: int, source: str, body: bytes, error: str, attempts: int, now: int, stage: str
    ) -> None:
        self.last_letter_id += 1
        letter_id = self.last_letter_id
        self.letters[letter_id] = Letter(letter_id, destination, seq, source, body, error, attempts, now, stage=stage)

    def letters_in_order(self) -> list[Letter]:
        return [self.letters[i] for i in sorted(self.letters)]

    def rows_after(self, seq: int, limit: int | None = None) -> list[Row]:
        start = bisect_right(self.order, seq)
        end = len(self.order) if limit is None else start + limit
        return [self.rows[s] for s in self.order[start:end]]

    def position(self, name: str) -> int:
        """A cursor's position; the head for a name with no cursor yet."""
        cursor = self.cursors.get(name)
        return cursor.seq if cursor is not None else self.head

    def first_seq_from(self, since_ms: int) -> int | None:
        """The first stored message received at ``since_ms`` or later."""
        return next((seq for seq in self.order if self.rows[seq].received_at >= since_ms), None)

    def seq_range(self, since_ms: int, until_ms: int | None) -> tuple[int, int]:
        head = self.head
        first = self.first_seq_from(since_ms)
        if first is None:
            return head, head
        upto = head
        if until_ms is not None:
            last = max((seq for seq in self.order if self.rows[seq].received_at < until_ms), default=0)
            upto = max(first - 1, last)
        return first - 1, upto

    def books(self, since_ms: int | None) -> LogBooks:
        cursors = [self._cursor_books(name, since_ms) for name in sorted(self.cursors)]
        sources: dict[str, dict[str, int]] = {}
        for (source, outcome, hour), count in self.source_outcomes.items():
            if hour >= (since_ms or 0) // 3_600_000:
                books = sources.setdefault(source, {})
                books[outcome] = books.get(outcome, 0) + count
        return LogBooks(head=self.head, cursors=cursors, sources=sources, since_ms=since_ms)

    def _cursor_books(self, name: str, since_ms: int | None) -> CursorBooks:
        cursor = self.cursors[name]
        from_seq = cursor.start_seq
        if since_ms is not None:
            # Deletion requests book runs of removed seqs above a cursor, not its positions.
            moves = [
                upto
                for destination, _, outcome, _, upto, at in self.outcomes
                if destination == name and at < since_ms and outcome not in ("redriven", DELETED_OUTCOME)
            ]
            from_seq = max([cursor.start_seq, *moves])
        outcomes: dict[str, dict[str, int]] = {}
        for destination, source, outcome, count, upto, _ in self.outcomes:
            if destination == name and upto > from_seq:
                by_source = outcomes.setdefault(source, {})
                by_source[outcome] = by_source.get(outcome, 0) + count
        pending = Counter(row.source for row in self.rows_after(cursor.seq))
        held = sum(1 for x in self.letters.values() if x.destination == name)
        return CursorBooks(name, cursor.seq, cursor.start_seq, from_seq, outcomes, dict(pending), held)

    def backlog(self, positions: Mapping[str, int]) -> list[BacklogInfo]:
        infos = []
        for destination, cursor in positions.items():
            waiting = max(0, self.head - cursor)
            sample = self.rows_after(cursor, 200) if waiting else []
            oldest = sample[0].received_at / 1000 if sample else 0.0
            average = sum(len(r.body) for r in sample) / len(sample) if sample else 0.0
            infos.append(BacklogInfo(destination, waiting, int(waiting * average), oldest))
        return infos


def body_field(body: bytes, key: str) -> Any:
    """``key`` of a JSON object body (None when absent, or when the body is not an object)."""
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return message.get(key) if isinstance(message, dict) else None
