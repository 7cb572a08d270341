"""One group commit of the SQLite log: the requests that queued while the previous commit ran, and
the single transaction that stores their entries, dead letters and books with the queued cursors."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import groupby
from operator import attrgetter

import trio
from msgspec.structs import astuple

from gateway.errors import LogUnavailableError
from gateway.log import AppendResult, Entry, SourceLetter
from gateway.log.sqlite._dedup import DedupSlices
from gateway.log.sqlite._reads import head_seq
from gateway.log.sqlite._rows import chunks, insert_statements, shared_parameters
from gateway.log.sqlite._schema import ADD_DEAD_LETTER, ADD_OUTCOME, ADD_SOURCE_OUTCOME, SET_CURSOR, transaction

# A duplicate key is found and recorded (gateway.log.sqlite._dedup) in the same transaction as
# the messages: the only way to be exact across concurrent requests and crashes. Keys and rows
# go in as multi-row statements (gateway.log.sqlite._rows), so the commit thread takes the GIL
# back once per chunk, not once per row, while the event loop is busy.
# The rows of a commit share its time: it is bound once, and each row's values are its Entry's
# fields in order (source, message_id, body), flattened in C.
_APPEND_SQL = insert_statements("INSERT INTO messages (source, message_id, body, received_at)", 4, shared_last=True)


class Waiter:
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


#: A queued delivery outcome: (destination, source, outcome, count, upto_seq).
QueuedOutcome = tuple[str, str, str, int, int]


def commit_group(
    conn: sqlite3.Connection,
    waiters: list[Waiter],
    cursors: dict[str, int],
    outcomes: list[QueuedOutcome],
    now: int,
    dedup: DedupSlices,
    dedup_window_ms: int,
) -> tuple[list[AppendResult], int]:
    """Write everything ``waiters`` queued, and the queued ``cursors`` with their ``outcomes``,
    in one transaction. Returns each waiter's result and the head after it."""
    dedup.cover(conn, now, dedup_window_ms)  # a window longer than the slices had: their keys first
    cur = conn.cursor()
    try:
        results, head = _write_group(cur, conn, waiters, cursors, outcomes, now, dedup, dedup_window_ms)
    except BaseException:
        dedup.undo()
        raise
    dedup.keep()
    return results, head


def _write_group(
    cur: sqlite3.Cursor,
    conn: sqlite3.Connection,
    waiters: list[Waiter],
    cursors: dict[str, int],
    outcomes: list[QueuedOutcome],
    now: int,
    dedup: DedupSlices,
    dedup_window_ms: int,
) -> tuple[list[AppendResult], int]:
    results = []
    with transaction(conn):
        books: Counter[tuple[str, str]] = Counter()
        for waiter in waiters:
            stored = 0
            position = 0  # of the chunk's first entry in the waiter's entries
            duplicate_positions: list[int] = []
            # Runs of one source (a request's own messages, then what its filters forwarded),
            # so the books know each source's stored and duplicate counts.
            for source, run in groupby(waiter.entries, key=attrgetter("source")):
                run_entries = list(run)
                run_stored = 0
                for chunk in chunks(run_entries):
                    new = dedup.claim(cur, source, [(e.message_id, now) for e in chunk], dedup_window_ms)
                    if len(new) == len(chunk):  # every id new, none twice: the common case
                        fresh = chunk
                    else:
                        fresh = []
                        for i, e in enumerate(chunk, position):
                            if e.message_id in new:
                                new.discard(e.message_id)  # a second copy in this chunk is a duplicate
                                fresh.append(e)
                            else:
                                duplicate_positions.append(i)
                    position += len(chunk)
                    for part in chunks(fresh):
                        cur.execute(_APPEND_SQL[len(part)], shared_parameters(now, map(astuple, part)))
                    run_stored += len(fresh)
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
                    ADD_DEAD_LETTER,
                    [(x.destination, 0, x.source, x.body, x.error, 1, now, x.stage) for x in waiter.letters],
                )
            results.append(
                AppendResult(
                    stored=stored,
                    duplicates=len(waiter.entries) - stored,
                    duplicate_positions=tuple(duplicate_positions),
                )
            )
        hour = now // 3_600_000
        cur.executemany(ADD_SOURCE_OUTCOME, [(source, outcome, hour, n) for (source, outcome), n in books.items() if n])
        for destination, seq in cursors.items():
            cur.execute(SET_CURSOR, (destination, seq, now))
        cur.executemany(ADD_OUTCOME, [(*row, now) for row in outcomes])
        head = head_seq(conn)
    return results, head
