"""Reading the SQLite log, and its cursors: records after a seq, time ranges of seqs, where a new
cursor starts, the books, the backlog; shared by the engine and the offline reader."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from gateway.components import Record
from gateway.log import DELETED_OUTCOME, BacklogInfo, CursorBooks, LogBooks, deleted_runs
from gateway.log.sqlite._schema import ADD_OUTCOME, SET_CURSOR, connect_read_only, transaction


def head_seq(conn: sqlite3.Connection) -> int:
    """The seq of the newest row (0 when none ever was: the newest row is never deleted)."""
    head: int = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    return head


def read_records(conn: sqlite3.Connection, after_seq: int, max_records: int, max_bytes: int) -> list[Record]:
    """Records with ``seq > after_seq`` in order, at most ``max_records`` and (beyond the first)
    at most ``max_bytes`` of bodies."""
    rows = conn.execute(
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
    return records


def cursor_positions(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Every persisted cursor: name -> (seq, start_seq)."""
    rows = conn.execute("SELECT destination, seq, start_seq FROM cursors").fetchall()
    return {name: (seq, start) for name, seq, start in rows}


def first_seq_from(conn: sqlite3.Connection, start_ms: int) -> int | None:
    """The first stored message received at ``start_ms`` or later."""
    row = conn.execute("SELECT min(seq) FROM messages WHERE received_at >= ?", (start_ms,)).fetchone()
    return row[0] if row else None


def start_cursor(conn: sqlite3.Connection, destination: str, start: int, now: int) -> None:
    """A destination that replays the archive from ``start``: messages a deletion request
    removed above it are booked as ``filtered:deleted`` with its cursor, in one transaction."""
    with transaction(conn):
        conn.execute(SET_CURSOR, (destination, start, now))
        deleted = conn.execute("SELECT seq, source FROM deleted_seqs WHERE seq > ? ORDER BY seq", (start,)).fetchall()
        conn.executemany(
            ADD_OUTCOME,
            [
                (destination, source, DELETED_OUTCOME, n, upto, now)
                for source, n, upto in deleted_runs(deleted, after=start)
            ],
        )


def forget_cursor(conn: sqlite3.Connection, name: str) -> None:
    """Remove a cursor and its delivery books, in one transaction."""
    with transaction(conn):
        conn.execute("DELETE FROM cursors WHERE destination = ?", (name,))
        conn.execute("DELETE FROM delivery_outcomes WHERE destination = ?", (name,))


def seq_range(conn: sqlite3.Connection, since_ms: int, until_ms: int | None, head: int) -> tuple[int, int]:
    """``(after, upto)``: the messages up to ``head`` received in ``[since_ms, until_ms)``."""
    first = conn.execute(
        "SELECT min(seq) FROM messages WHERE received_at >= ? AND seq <= ?", (since_ms, head)
    ).fetchone()[0]
    if first is None:
        return head, head
    upto = head
    if until_ms is not None:
        last = conn.execute(
            "SELECT max(seq) FROM messages WHERE received_at < ? AND seq <= ?", (until_ms, head)
        ).fetchone()[0]
        upto = max(first - 1, last or 0)
    return first - 1, upto


def backlog(conn: sqlite3.Connection, positions: Mapping[str, int], head: int) -> list[BacklogInfo]:
    """How much waits for each destination at its position (bytes estimated from a sample)."""
    infos = []
    for destination, cursor in positions.items():
        waiting = max(0, head - cursor)
        oldest, average = 0.0, 0.0
        if waiting:
            oldest_row, average_row = conn.execute(
                "SELECT (SELECT received_at FROM messages WHERE seq > ?1 ORDER BY seq LIMIT 1), "
                "(SELECT avg(length(body)) FROM "
                "(SELECT body FROM messages WHERE seq > ?1 ORDER BY seq LIMIT 200))",
                (cursor,),
            ).fetchone()
            oldest, average = (oldest_row or 0) / 1000, average_row or 0.0
        infos.append(BacklogInfo(destination, waiting, int(waiting * average), oldest))
    return infos


def books_of_file(path: Path, since_ms: int | None) -> LogBooks:
    """:func:`books` on a connection of its own: counting what every cursor has pending holds
    up neither commits nor workers."""
    conn = connect_read_only(path, timeout=30)
    try:
        return books(conn, since_ms)
    finally:
        conn.close()


def books(conn: sqlite3.Connection, since_ms: int | None) -> LogBooks:
    """Every cursor's and source's books, in one read transaction: one snapshot of the file, so
    a cursor and its outcomes saved while this reads cannot make the books disagree."""
    conn.execute("BEGIN")
    try:
        head = head_seq(conn)
        cursors = [
            _cursor_books(conn, name, cursor, start, since_ms)
            for name, cursor, start in conn.execute(
                "SELECT destination, seq, start_seq FROM cursors ORDER BY destination"
            ).fetchall()
        ]
        return LogBooks(head=head, cursors=cursors, sources=_source_books(conn, since_ms), since_ms=since_ms)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _cursor_books(conn: sqlite3.Connection, name: str, cursor: int, start: int, since_ms: int | None) -> CursorBooks:
    from_seq = start
    if since_ms is not None:
        # Deletion requests book runs of removed seqs above a cursor, not a cursor
        # position, so they do not say where the cursor was.
        row = conn.execute(
            "SELECT max(upto_seq) FROM delivery_outcomes "
            f"WHERE destination = ? AND at < ? AND outcome NOT IN ('redriven', '{DELETED_OUTCOME}')",
            (name, since_ms),
        ).fetchone()
        from_seq = max(start, row[0] or start)
    outcomes: dict[str, dict[str, int]] = {}
    for source, outcome, count in conn.execute(
        "SELECT source, outcome, sum(count) FROM delivery_outcomes WHERE destination = ? AND upto_seq > ? "
        "GROUP BY source, outcome",
        (name, from_seq),
    ):
        outcomes.setdefault(source, {})[outcome] = count
    pending = dict(conn.execute("SELECT source, count(*) FROM messages WHERE seq > ? GROUP BY source", (cursor,)))
    held = conn.execute("SELECT count(*) FROM dead_letters WHERE destination = ?", (name,)).fetchone()[0]
    return CursorBooks(name, cursor, start, from_seq, outcomes, pending, held)


def _source_books(conn: sqlite3.Connection, since_ms: int | None) -> dict[str, dict[str, int]]:
    """Each source's books, from the hour that holds ``since_ms`` (all of them without it)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'source_outcomes'").fetchone():
        return {}  # a log from before the books
    books: dict[str, dict[str, int]] = {}
    for source, outcome, count in conn.execute(
        "SELECT source, outcome, sum(count) FROM source_outcomes WHERE hour >= ? GROUP BY source, outcome",
        ((since_ms or 0) // 3_600_000,),
    ):
        books.setdefault(source, {})[outcome] = count
    return books
