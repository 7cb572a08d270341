"""The SQLite log's dedup keys, kept for the dedup window only: one WITHOUT ROWID table per slice
of time, dropped whole once the window has passed it, plus the keys of the newest messages in
memory until they are written to the newest slice, sorted, in one go.

A key ``(source, message_id)`` is a duplicate while its earlier copy was received at most
``dedup_window_secs`` ago (and was not deleted by a deletion request). The keys live apart from
the messages, so the messages table needs no unique index over the archive.

Why the keys of the newest messages wait in memory: a random (UUIDv4) key written by its own
commit dirties a page of the slice's B-tree per key, and the WAL takes a 4 KiB page for each
(a commit of 3,200 keys wrote 13 MB). Written later, sorted and thousands at a time, the keys
that share a page share its write. They are exact all along: every one of them is in its
message's row, in the same commit, and ``meta.dedup_flushed_seq`` says up to which seq the
slices have them all; on open, the keys of the messages after it are read back (a few seconds
of traffic, never the log).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The window is covered by this many slices (plus the current one, partly filled): the keys
#: kept are at most 1 + 1/SLICES_PER_WINDOW windows' worth, and a key is looked up in at most
#: SLICES_PER_WINDOW + 2 tables.
SLICES_PER_WINDOW = 4
#: Keys waiting in memory past this many, or for longer than FLUSH_AGE_MS, are written out (by
#: the engine's checkpoints, about every second), FLUSH_CHUNK keys per transaction so commits
#: go on in between.
FLUSH_KEYS = 20_000
FLUSH_AGE_MS = 10_000
FLUSH_CHUNK = 4096

#: Bits per key and probes of the Bloom filter in front of each slice older than the newest.
FILTER_BITS_PER_KEY = 10
FILTER_PROBES = 3

SLICES_SCHEMA = """
-- Every dedup slice: its table holds keys received before end_ms (in [start_ms, end_ms) but
-- for a clock set back), so once end_ms is a window ago, the whole table is past the window.
CREATE TABLE IF NOT EXISTS dedup_slices (
    name TEXT PRIMARY KEY,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL
);
"""

_SLICE_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, message_id)
) WITHOUT ROWID
"""

_FLUSHED = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'dedup_flushed_seq'"
_SET_FLUSHED = (
    "INSERT INTO meta (key, value) VALUES ('dedup_flushed_seq', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_KEYS_FROM = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'dedup_keys_from'"
_SET_KEYS_FROM = (
    "INSERT INTO meta (key, value) VALUES ('dedup_keys_from', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Slice:
    """One slice's table and the times its keys were received in: ``[start_ms, end_ms)``."""

    name: str
    start_ms: int
    end_ms: int


def _write_sql(name: str) -> str:
    # The newer copy of a key wins (one past the window was accepted again).
    return (
        f"INSERT INTO {name} (source, message_id, received_at) VALUES (?, ?, ?) "
        "ON CONFLICT (source, message_id) DO UPDATE SET received_at = excluded.received_at "
        "WHERE excluded.received_at > received_at"
    )


def _seen_sql(name: str, rows: int) -> str:
    marks = ", ".join(["?"] * rows)
    return (
        f"SELECT message_id, received_at FROM {name} WHERE source = ? AND message_id IN ({marks}) AND received_at >= ?"
    )


class DedupSlices:
    """The slices of one log file, in time order, and the keys not yet written to them; used on
    the writer connection only (commits, flushes, purges and deletions, one at a time under its
    limiter)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._slices = [
            Slice(name, start, end)
            for name, start, end in conn.execute("SELECT name, start_ms, end_ms FROM dedup_slices ORDER BY start_ms")
        ]
        self._sql: dict[tuple[str, str, int], str] = {}
        row = conn.execute(_KEYS_FROM).fetchone()
        #: The key of every message received at or after this time is in the slices or in memory;
        #: older ones may not be (their slices were dropped, or a schema 1 log or the bulk writer
        #: left them out). A longer window than that has them written again (:meth:`cover`).
        #: Without the row (a log of before it), the oldest slice's start: older ones were dropped.
        self.keys_from: int = row[0] if row else (self._slices[0].start_ms if self._slices else 0)
        row = conn.execute(_FLUSHED).fetchone()
        #: Every key of the messages up to this seq is in the slices.
        self.flushed_seq: int = row[0] if row else 0
        #: The keys of the messages after flushed_seq: key -> received_at (the newest copy's).
        self._recent: dict[Key, int] = {}
        for source, message_id, received_at in conn.execute(
            "SELECT source, message_id, received_at FROM messages WHERE seq > ? ORDER BY seq", (self.flushed_seq,)
        ):
            self._recent[(source, message_id)] = received_at
        self._recent_since: int | None = min(self._recent.values(), default=None)
        #: What the commit in progress changed in _recent: key -> the value before (None: absent).
        self._undo: dict[Key, int | None] = {}
        #: A flush in progress: the keys it writes (sorted), how many are written, its seq.
        self._flushing: tuple[list[tuple[Key, int]], int, int] | None = None
        #: Bloom filters of the slices older than the newest (which no write reaches any more),
        #: by name, built off the commit path (:meth:`build_filters`). A key a slice's filter
        #: rules out is not in it; the others are looked up. A slice without one is looked up.
        self._filters: dict[str, BloomFilter] = {}

    @property
    def slices(self) -> Sequence[Slice]:
        return tuple(self._slices)

    @property
    def waiting(self) -> int:
        """Keys in memory only (their messages hold them on disk)."""
        return len(self._recent)

    # -- in a commit ---------------------------------------------------------------------------

    def claim(self, cur: sqlite3.Cursor, source: str, keys: Sequence[tuple[str, int]], window_ms: int) -> set[str]:
        """Find which of ``keys`` ((message_id, received_at), one source) are new, not seen
        within the window before their received_at, and hold them as the commit's. The caller
        stores the first entry of each id returned, and only that one, in the same transaction,
        then calls :meth:`keep` or (the transaction failed) :meth:`undo`."""
        first: dict[str, int] = {}
        for message_id, received_at in keys:
            first.setdefault(message_id, received_at)
        recent = self._recent
        new: list[str] = []
        unknown: list[str] = []
        for message_id, received_at in first.items():
            held = recent.get((source, message_id))
            if held is None:
                unknown.append(message_id)
            elif received_at - held > window_ms:  # the newest copy is in memory, and past the window
                new.append(message_id)
        if unknown:
            seen = self._seen(cur, source, unknown, first, window_ms)
            new += [m for m in unknown if m not in seen]
        undo = self._undo
        for message_id in new:
            key = (source, message_id)
            if key not in undo:
                undo[key] = recent.get(key)
            recent[key] = first[message_id]
        if new and self._recent_since is None:
            self._recent_since = first[new[0]]
        return set(new)

    def _seen(
        self, cur: sqlite3.Cursor, source: str, ids: list[str], first: dict[str, int], window_ms: int
    ) -> set[str]:
        cutoff = min(first[m] for m in ids) - window_ms
        seen: set[str] = set()
        hashes: list[int] | None = None
        for each in self._slices:
            if each.end_ms <= cutoff:  # every key in it is past the window
                continue
            asked = ids
            bloom = self._filters.get(each.name)
            if bloom is not None:
                if hashes is None:
                    hashes = [hash((source, m)) for m in ids]
                asked = [m for m, h in zip(ids, hashes, strict=True) if bloom.may_hold(h)]
                if not asked:
                    continue
            sql = self._statement("seen", each.name, len(asked))
            for message_id, received_at in cur.execute(sql, [source, *asked, cutoff]):
                if first[message_id] - received_at <= window_ms:
                    seen.add(message_id)
        return seen

    def keep(self) -> None:
        """The commit that claimed keys went through."""
        self._undo.clear()

    def undo(self) -> None:
        """The commit that claimed keys failed: forget them again."""
        for key, before in self._undo.items():
            if before is None:
                self._recent.pop(key, None)
            else:
                self._recent[key] = before
        self._undo.clear()
        if not self._recent:
            self._recent_since = None

    # -- writing the keys out ------------------------------------------------------------------

    def cover(self, conn: sqlite3.Connection, now: int, window_ms: int) -> None:
        """Make sure the slices hold the keys of the whole window: after ``dedup_window_secs``
        grew (a restart or a reload), the keys of the messages still in the log from before
        :attr:`keys_from` go into a slice of their own, in one transaction (a scan of the
        messages, once). Called before a commit claims keys; nothing to do otherwise."""
        start = now - window_ms
        if start >= self.keys_from:
            return
        names = {each.name for each in self._slices}
        while f"dedup_keys_{start}" in names:
            start -= 1
        back = Slice(f"dedup_keys_{start}", start, self.keys_from)  # every key in it is older
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SLICE_TABLE.format(name=back.name))
            conn.execute(
                "INSERT INTO dedup_slices (name, start_ms, end_ms) VALUES (?, ?, ?)",
                (back.name, back.start_ms, back.end_ms),
            )
            conn.execute(
                f"INSERT INTO {back.name} (source, message_id, received_at) "
                "SELECT source, message_id, received_at FROM messages WHERE received_at >= ? AND received_at < ? "
                "ON CONFLICT (source, message_id) DO UPDATE SET received_at = excluded.received_at "
                "WHERE excluded.received_at > received_at",
                (start, self.keys_from),
            )
            conn.execute(_SET_KEYS_FROM, (str(start),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._slices = sorted([*self._slices, back], key=lambda each: each.start_ms)
        self.keys_from = start

    def keys_missing_before(self, conn: sqlite3.Connection, at: int) -> None:
        """Messages received before ``at`` may have no key in the slices (the bulk writer's
        rows before the window), in the caller's transaction."""
        if at > self.keys_from:
            conn.execute(_SET_KEYS_FROM, (str(at),))
            self.keys_from = at

    def flush_due(self, now: int) -> bool:
        return self._flushing is not None or (
            self._recent_since is not None
            and (len(self._recent) >= FLUSH_KEYS or now - self._recent_since >= FLUSH_AGE_MS)
        )

    def flush_step(self, conn: sqlite3.Connection, head: int, now: int, window_ms: int) -> bool:
        """Write up to FLUSH_CHUNK of the keys in memory to the newest slice, sorted, in one
        transaction; the last step also moves ``dedup_flushed_seq`` to ``head`` as it was at the
        first step (every commit before that step had its keys in memory). Returns whether
        another step is needed. Called between commits."""
        if self._flushing is None:
            if not self._recent:
                return False
            self._flushing = (sorted(self._recent.items()), 0, head)
        keys, done, upto = self._flushing
        part = keys[done : done + FLUSH_CHUNK]
        last = done + len(part) >= len(keys)
        # A slice must end after every key in it (lookups skip it, and purge drops it, by its
        # end): after the clock was set back, keys received later than ``now`` wait here too.
        target = self.current(conn, max([now, *(at for _, at in part)]), window_ms)
        # A key a deletion forgot since the flush began stays out (its message may come again).
        recent = self._recent
        rows = [(s, m, at) for (s, m), at in part if (s, m) in recent]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_write_sql(target.name), rows)
            if last:
                conn.execute(_SET_FLUSHED, (str(upto),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if not last:
            self._flushing = (keys, done + len(part), upto)
            return True
        self._flushing = None
        self.flushed_seq = upto
        for key, at in keys:
            if self._recent.get(key) == at:  # not claimed again since
                del self._recent[key]
        self._recent_since = min(self._recent.values(), default=None)
        return False

    def flush_all(self, conn: sqlite3.Connection, head: int, now: int, window_ms: int) -> None:
        """Write every key in memory out (the bulk writer starts from there)."""
        while self.flush_step(conn, head, now, window_ms):
            pass

    # -- slices --------------------------------------------------------------------------------

    def current(self, conn: sqlite3.Connection, now: int, window_ms: int) -> Slice:
        """The slice keys received at ``now`` go to, created (and committed on its own: an
        empty slice is harmless) when the newest one has ended."""
        if self._slices and now < self._slices[-1].end_ms:
            return self._slices[-1]
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = self.open_slice(conn, now, window_ms)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._slices = [each for each in self._slices if each.start_ms != now]
            raise
        return new

    def open_slice(self, conn: sqlite3.Connection, now: int, window_ms: int) -> Slice:
        """Start a slice at ``now``, in the caller's transaction (the bulk writer's)."""
        new = Slice(f"dedup_keys_{now}", now, now + max(window_ms // SLICES_PER_WINDOW, 1))
        conn.execute(_SLICE_TABLE.format(name=new.name))
        conn.execute(
            "INSERT OR IGNORE INTO dedup_slices (name, start_ms, end_ms) VALUES (?, ?, ?)",
            (new.name, new.start_ms, new.end_ms),
        )
        self._slices.append(new)
        return new

    def write_direct(
        self, cur: sqlite3.Cursor, source: str, keys: Sequence[tuple[str, int]], window_ms: int
    ) -> set[str]:
        """:meth:`claim`, for the bulk writer: the new keys go straight to the newest slice
        (the caller sorts them, and sets ``dedup_flushed_seq`` with :meth:`mark_flushed`)."""
        first: dict[str, int] = {}
        for message_id, received_at in keys:
            first.setdefault(message_id, received_at)
        ids = list(first)
        seen = self._seen(cur, source, ids, first, window_ms)
        new = [m for m in ids if m not in seen]
        cur.executemany(_write_sql(self._slices[-1].name), [(source, m, first[m]) for m in new])
        return set(new)

    def mark_flushed(self, conn: sqlite3.Connection, seq: int) -> None:
        """Every key of the messages up to ``seq`` is in the slices (inside the caller's transaction)."""
        conn.execute(_SET_FLUSHED, (str(seq),))
        self.flushed_seq = seq

    def forget(self, cur: sqlite3.Cursor, keys: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        """Delete the keys of deleted messages, ``(source, message_id, received_at)``, from the
        slices, in the caller's transaction (a message a deletion request removed may be sent
        again); once it commits, :meth:`forget_waiting` the returned ones."""
        rows = list(keys)  # few: every slice is asked (a clock set back files keys out of range)
        for each in self._slices:
            cur.executemany(f"DELETE FROM {each.name} WHERE source = ? AND message_id = ? AND received_at = ?", rows)
        return rows

    def forget_waiting(self, keys: Iterable[tuple[str, str, int]]) -> None:
        for source, message_id, received_at in keys:
            if self._recent.get((source, message_id)) == received_at:
                del self._recent[(source, message_id)]

    def drop_expired(self, conn: sqlite3.Connection, now: int, window_ms: int) -> int:
        """Drop the slices whose every key is past the window (never the newest); returns how
        many went. One transaction per slice."""
        dropped = 0
        while len(self._slices) > 1 and self._slices[0].end_ms <= now - window_ms:
            gone = self._slices[0]
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"DROP TABLE IF EXISTS {gone.name}")
                conn.execute("DELETE FROM dedup_slices WHERE name = ?", (gone.name,))
                # Keys received before its end may have been in it.
                keys_from = max(self.keys_from, gone.end_ms)
                conn.execute(_SET_KEYS_FROM, (str(keys_from),))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._slices.pop(0)
            self.keys_from = keys_from
            self._filters.pop(gone.name, None)
            dropped += 1
        return dropped

    def build_filters(self, path: Path) -> int:
        """Build the Bloom filter of each slice older than the newest that has none, reading it
        on a connection of its own (in a worker thread: commits go on meanwhile; no write
        reaches such a slice but a deletion's, which a filter may ignore). Returns how many."""
        built = 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            for each in self._slices[:-1]:
                if each.name in self._filters:
                    continue
                try:
                    count = conn.execute(f"SELECT count(*) FROM {each.name}").fetchone()[0]
                    bloom = BloomFilter(count)
                    for source, message_id in conn.execute(f"SELECT source, message_id FROM {each.name}"):
                        bloom.add(hash((source, message_id)))
                except sqlite3.OperationalError:  # dropped meanwhile
                    continue
                self._filters[each.name] = bloom
                built += 1
        finally:
            conn.close()
        return built

    def _statement(self, kind: str, name: str, rows: int) -> str:
        key = (kind, name, rows)
        sql = self._sql.get(key)
        if sql is None:
            if len(self._sql) > 512:  # slices come and go
                self._sql.clear()
            sql = self._sql[key] = _seen_sql(name, rows)
        return sql


class BloomFilter:
    """A Bloom filter of 64-bit hashes (Python's ``hash`` of the key: one process's filters
    are built and read by that process only), :data:`FILTER_BITS_PER_KEY` bits a key,
    :data:`FILTER_PROBES` probes (about 2% false positives, which cost a lookup)."""

    __slots__ = ("_bits", "_size")

    def __init__(self, keys: int) -> None:
        self._size = max(64, keys * FILTER_BITS_PER_KEY)
        self._bits = bytearray(self._size // 8 + 1)

    def add(self, h: int) -> None:
        size, bits = self._size, self._bits
        low, step = h & 0xFFFFFFFF, ((h >> 32) & 0xFFFFFFFF) | 1
        for i in range(FILTER_PROBES):
            at = (low + i * step) % size
            bits[at >> 3] |= 1 << (at & 7)

    def may_hold(self, h: int) -> bool:
        size, bits = self._size, self._bits
        low, step = h & 0xFFFFFFFF, ((h >> 32) & 0xFFFFFFFF) | 1
        for i in range(FILTER_PROBES):
            at = (low + i * step) % size
            if not bits[at >> 3] & (1 << (at & 7)):
                return False
        return True


def migrate_unique_index(conn: sqlite3.Connection, now: int, window_ms: int) -> None:
    """Move a log of schema 1 (a unique index on the messages over the whole archive) to dedup
    slices: the keys received within the window go into one slice, then the index goes."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'messages_by_key'").fetchone()
    if not exists:
        return
    cutoff = now - window_ms
    # The slice ends after every key in it, those received later than ``now`` too (a clock set back).
    newest = max(now, conn.execute("SELECT coalesce(max(received_at), 0) FROM messages").fetchone()[0])
    first = Slice(f"dedup_keys_{cutoff}", cutoff, newest + max(window_ms // SLICES_PER_WINDOW, 1))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SLICE_TABLE.format(name=first.name))
        conn.execute(
            "INSERT OR IGNORE INTO dedup_slices (name, start_ms, end_ms) VALUES (?, ?, ?)",
            (first.name, first.start_ms, first.end_ms),
        )
        # The keys are unique in the messages already (that index); received_at grows with seq.
        conn.execute(
            f"INSERT OR IGNORE INTO {first.name} (source, message_id, received_at) "
            "SELECT source, message_id, received_at FROM messages WHERE received_at >= ?",
            (cutoff,),
        )
        conn.execute(_SET_FLUSHED, (str(conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]),))
        conn.execute(_SET_KEYS_FROM, (str(cutoff),))
        conn.execute("DROP INDEX messages_by_key")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
