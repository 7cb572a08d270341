"""Reading the SQLite log, and its cursors: records after a seq, time ranges of seqs, where a new
cursor starts, the backlog; shared by the engine and the offline reader."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from gateway.components import Record
from gateway.log import DELETED_OUTCOME, BacklogInfo
from gateway.log.sqlite._deletion import runs
from gateway.log.sqlite._schema import ADD_OUTCOME, SET_CURSOR, transaction


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
            [(destination, source, DELETED_OUTCOME, n, upto, now) for source, n, upto in runs(deleted, after=start)],
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
