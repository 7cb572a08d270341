"""Dead letters in the SQLite log: keeping them, listing them, marking them for redrive or
discarding them, and handing redriven ones to their destination's worker and booking the result."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from gateway.components import Record
from gateway.log import TOMBSTONE_TYPE, DeadLetter
from gateway.log.sqlite._schema import ADD_DEAD_LETTER, ADD_OUTCOME, transaction


def add_dead_letters(
    conn: sqlite3.Connection,
    destination: str,
    records: Sequence[Record],
    error: str,
    attempts: int,
    stage: str,
    now: int,
) -> None:
    """Keep ``records`` as dead letters of ``destination``, in one transaction."""
    rows = [(destination, r.seq, r.source, r.body, error, attempts, now, stage) for r in records]
    with transaction(conn):
        # A record read before its user was deleted: its row is a tombstone now, and
        # its personal data must not come back as a dead letter.
        erased = {
            seq
            for (seq,) in conn.execute(
                "SELECT seq FROM messages WHERE seq IN (SELECT value FROM json_each(?)) "
                "AND json_extract(CAST(body AS TEXT), '$.type') = ?",
                (msgspec.json.encode([r.seq for r in records]).decode(), TOMBSTONE_TYPE),
            )
        }
        conn.executemany(ADD_DEAD_LETTER, [row for row in rows if not row[1] or row[1] not in erased])


def take_redrive(conn: sqlite3.Connection, destination: str, limit: int) -> list[tuple[int, Record, str]]:
    """Dead letters an operator asked to send again to ``destination``, oldest first."""
    rows = conn.execute(
        "SELECT id, seq, source, body, stage FROM dead_letters WHERE destination = ? AND state = 'redrive' "
        "ORDER BY id LIMIT ?",
        (destination, limit),
    ).fetchall()
    return [(i, Record(seq=seq, source=source, body=body), stage) for i, seq, source, body, stage in rows]


def finish_redrive(
    conn: sqlite3.Connection,
    destination: str,
    delivered: Sequence[tuple[int, Record]],
    failed: Sequence[int],
    error: str,
    dropped: Sequence[int],
    *,
    cursor: int,
    now: int,
) -> None:
    """Drop redriven letters the destination took (counting them as ``redriven`` in the
    destination's books, at its ``cursor``; a source's letters are in no books: they were never
    stored), and hold the ones it refused again."""
    counts: dict[str, int] = {}
    for _, record in delivered:
        if record.seq:
            counts[record.source] = counts.get(record.source, 0) + 1
    with transaction(conn):
        conn.executemany(
            "DELETE FROM dead_letters WHERE id = ?", [(i,) for i, _ in delivered] + [(i,) for i in dropped]
        )
        conn.executemany(
            "UPDATE dead_letters SET state = 'dead', error = ?, attempts = attempts + 1, failed_at = ? WHERE id = ?",
            [(error, now, i) for i in failed],
        )
        conn.executemany(
            ADD_OUTCOME,
            [(destination, source, "redriven", count, cursor, now) for source, count in counts.items()],
        )


def list_dead_letters(conn: sqlite3.Connection, destination: str | None, limit: int) -> list[DeadLetter]:
    """Dead letters in the order they were added, all or one ``destination``'s."""
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


def change_dead_letters(conn: sqlite3.Connection, action: str, destination: str | None, ids: Sequence[int]) -> int:
    """``redrive`` (mark for sending again) or ``discard`` (delete) dead letters, chosen by
    id or by destination; returns how many changed."""
    if action not in ("redrive", "discard"):
        raise ValueError(f"unknown action {action!r}")
    where, args = _selection(destination, ids)
    sql = (
        f"UPDATE dead_letters SET state = 'redrive' WHERE state = 'dead' AND {where}"
        if action == "redrive"
        else f"DELETE FROM dead_letters WHERE state = 'dead' AND {where}"
    )
    with transaction(conn):
        changed: int = conn.execute(sql, args).rowcount
    return changed


def _selection(destination: str | None, ids: Sequence[int]) -> tuple[str, tuple[object, ...]]:
    if ids:
        return f"id IN ({','.join('?' * len(ids))})", tuple(int(i) for i in ids)
    if destination:
        return "destination = ?", (destination,)
    raise ValueError("choose dead letters by ids or by destination")
