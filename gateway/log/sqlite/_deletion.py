"""Privacy requests in the SQLite log: deleting a userId's messages and dead letters (rows deleted,
or tombstoned where they must stay, with books that stay exact), and the suppression list."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

import msgspec

from gateway.log import DELETED_OUTCOME, DeletionReport, deleted_runs, mentions_user, tombstone, user_spellings
from gateway.log.sqlite._dedup import DedupSlices
from gateway.log.sqlite._schema import ADD_OUTCOME, connect_read_only, transaction

_USER_ID = "json_extract(CAST(body AS TEXT), '$.userId')"
# A tombstone carries the message's own messageId; the message_id column is the dedup key,
# which differs for forwarded messages (gateway.ingest.hub.forwarded_key).
_MESSAGE_ID = "coalesce(json_extract(CAST(body AS TEXT), '$.messageId'), message_id)"


def find_user_rows(path: Path, user_id: str) -> tuple[list[int], int]:
    """Scan the log for the user's rows on a connection of its own, so the full scan
    holds up neither commits nor workers; the transaction then checks only these rows
    and the ones stored since (seq > the head seen here)."""
    conn = connect_read_only(path, timeout=30)
    try:
        conn.execute("BEGIN")
        scanned_to: int = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
        seqs = [s for (s,) in conn.execute(f"SELECT seq FROM messages WHERE {_USER_ID} = ?", (user_id,))]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return seqs, scanned_to


def delete_user_rows(
    conn: sqlite3.Connection,
    user_id: str,
    candidates: list[int],
    scanned_to: int,
    destinations: tuple[str, ...],
    *,
    dedup: DedupSlices,
    read_upto: Mapping[str, int],
    read_upto_anyone: int,
    now: int,
) -> DeletionReport:
    """The deletion itself, in one transaction on the writer (see ``SQLiteLog.delete_user``).
    ``read_upto``: the highest seq each reader was handed (``read_upto_anyone``: by a read
    without a name), so the rows a worker may hold are tombstoned, not deleted."""
    secure_delete = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = ON")
    cur = conn.cursor()
    try:
        with transaction(conn):
            rows: list[tuple[int, str, str]] = cur.execute(
                f"SELECT seq, source, {_MESSAGE_ID} FROM messages WHERE seq IN (SELECT value FROM json_each(?)) "
                f"AND {_USER_ID} = ?",
                (msgspec.json.encode(candidates).decode(), user_id),
            ).fetchall()
            rows += cur.execute(
                f"SELECT seq, source, {_MESSAGE_ID} FROM messages WHERE seq > ? AND {_USER_ID} = ?",
                (scanned_to, user_id),
            ).fetchall()
            rows.sort()
            head = cur.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
            cursors: dict[str, int] = dict(cur.execute("SELECT destination, seq FROM cursors"))
            # (cursor, horizon]: what each destination may have in flight.
            windows = [(cursor, max(cursor, read_upto.get(d, 0), read_upto_anyone)) for d, cursor in cursors.items()]
            deleted: list[tuple[int, str]] = []
            kept: list[tuple[bytes, int]] = []
            for seq, source, message_id in rows:
                if seq == head or any(low < seq <= high for low, high in windows):
                    kept.append((tombstone(message_id), seq))
                else:
                    deleted.append((seq, source))
            gone = [(seq,) for seq, _ in deleted]
            # Their dedup keys go too (a tombstone keeps its key, as it keeps its row).
            forgotten = dedup.forget(
                cur,
                cur.execute(
                    "SELECT source, message_id, received_at FROM messages "
                    "WHERE seq IN (SELECT value FROM json_each(?))",
                    (msgspec.json.encode([seq for seq, _ in deleted]).decode(),),
                ).fetchall(),
            )
            cur.executemany("DELETE FROM messages WHERE seq = ?", gone)
            cur.executemany("INSERT OR IGNORE INTO deleted_seqs (seq, source) VALUES (?, ?)", deleted)
            cur.executemany("UPDATE messages SET body = ? WHERE seq = ?", kept)
            dead_letters = cur.execute(f"DELETE FROM dead_letters WHERE {_USER_ID} = ?", (user_id,)).rowcount
            spellings = user_spellings(user_id)
            samples = cur.execute("SELECT series, kind, body FROM series_samples").fetchall()
            cur.executemany(
                "DELETE FROM series_samples WHERE series = ? AND kind = ?",
                [(series, kind) for series, kind, body in samples if mentions_user(bytes(body), spellings)],
            )
            outcomes = [
                (destination, source, DELETED_OUTCOME, count, upto, now)
                for destination, cursor in cursors.items()
                for source, count, upto in deleted_runs(deleted, after=cursor)
            ]
            cur.executemany(ADD_OUTCOME, outcomes)
            cur.execute(
                "INSERT INTO deletion_requests (user_id, requested_at, messages_deleted, tombstoned, "
                "dead_letters_deleted) VALUES (?, ?, ?, ?, ?)",
                (user_id, now, len(deleted), len(kept), dead_letters),
            )
        dedup.forget_waiting(forgotten)
    finally:
        conn.execute(f"PRAGMA secure_delete = {('OFF', 'ON', 'FAST')[int(secure_delete)]}")
    removed = [seq for seq, _, _ in rows]
    pending = {d: sum(1 for seq in removed if seq > cursors.get(d, head)) for d in destinations}
    return DeletionReport(
        user_id=user_id,
        messages_deleted=len(deleted),
        tombstoned=len(kept),
        dead_letters_deleted=dead_letters,
        pending=pending,
    )


def suppressed_users(conn: sqlite3.Connection) -> frozenset[str]:
    """Every suppressed userId."""
    return frozenset(r[0] for r in conn.execute("SELECT user_id FROM suppressions"))


def set_suppressed(conn: sqlite3.Connection, user_id: str, suppressed: bool, now: int) -> bool:
    """Add (or remove) a userId to the suppression list; returns whether anything changed."""
    with transaction(conn):
        if suppressed:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO suppressions (user_id, created_at) VALUES (?, ?)", (user_id, now)
            )
        else:
            cursor = conn.execute("DELETE FROM suppressions WHERE user_id = ?", (user_id,))
    return cursor.rowcount > 0
