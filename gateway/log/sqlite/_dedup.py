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

Each slice has a Bloom filter in front of it, so a new key is looked up in no slice at all but
for a false positive (at most about 0.5% a slice). The slice being written gets its filter when it
opens, each key added before it is written; the slices found on open get theirs in the
background (looked up until then): a process writes only to slices it opened, so theirs no
longer change. A slice also closes at :data:`SLICE_KEYS` keys, whatever its time: random keys
written out land on a page each of it, so it must stay small enough for the writer's cache (at
20M messages a quarter window was 700k keys, and both its lookups and its write-outs missed).
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from gateway.log.sqlite._rows import chunks, insert_statements

#: The window is covered by this many slices (plus the current one, partly filled), or more
#: when they fill up (:data:`SLICE_KEYS`): the keys kept are at most 1 + 1/SLICES_PER_WINDOW
#: windows' worth.
SLICES_PER_WINDOW = 4
#: Keys waiting in memory past this many, or for longer than FLUSH_AGE_MS, are written out (by
#: the engine's checkpoints, about every second), FLUSH_CHUNK keys per transaction so commits
#: go on in between.
FLUSH_KEYS = 20_000
FLUSH_AGE_MS = 10_000
FLUSH_CHUNK = 4096

#: New keys of one chunk of a commit (up to 128, one source), at least CLUSTER_MIN of them,
#: between which the open slice holds at most CLUSTER_GAP keys, are written to it in the commit.
CLUSTER_MIN = 16
CLUSTER_GAP = 64
#: A slice is also closed once this many keys were written to it, whatever its time: random
#: keys written out land on a page each of the slice being written, which must stay small
#: enough for the writer's page cache (~15 MiB at about 60 bytes a key).
SLICE_KEYS = 1 << 18
#: A slice that fills up before its time ends makes the next one twice as large (up to this),
#: so the slices of a window stay fewer at high rates: a new key is checked against every
#: slice's filter, one word each, and with 262,144 keys a slice whatever the rate, 330 slices (a
#: day's window at 1,000 events/s) cost 88 µs a key and 40 slices 6 µs; with the doubling that
#: window takes about 48. The bound keeps the open slice near the writer's cache (~120 MiB at
#: most), a trade between the two costs. A slice closed by its time brings the size back to
#: SLICE_KEYS.
MAX_SLICE_KEYS = 1 << 21
#: Bits per key of the Bloom filter in front of each slice (a 64-bit word per key, 4 bits set in
#: it: one word read per slice and key; about 0.5% false positives when full, which cost a lookup).
FILTER_BITS_PER_KEY = 16

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


@dataclass(frozen=True, slots=True, eq=False)
class Slice:
    """One slice's table and the times its keys were received in: ``[start_ms, end_ms)``. Equal
    to itself only: a slice made later under a dropped one's name is another slice (its filter)."""

    name: str
    start_ms: int
    end_ms: int


def _write_statements(name: str) -> dict[int, str]:
    # The newer copy of a key wins (one past the window was accepted again).
    return insert_statements(
        f"INSERT INTO {name} (source, message_id, received_at)",
        3,
        " ON CONFLICT (source, message_id) DO UPDATE SET received_at = excluded.received_at "
        "WHERE excluded.received_at > received_at",
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
        self._sql: dict[tuple[str, int], str] = {}
        self._writes: dict[str, dict[int, str]] = {}
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
        #: Bloom filters of the slices. A key a slice's filter rules out is not in it;
        #: the others are looked up. A slice without one is looked up. The slice this process
        #: writes to (:attr:`_open`) has one from its start, every key added before it is written;
        #: the slices it found on open (closed: a process writes only to a slice it opened) get
        #: theirs off the commit path (:meth:`build_filters`).
        self._filters: dict[Slice, BloomFilter] = {}
        #: The slice the keys are written to, opened by this process, and how many were written.
        self._open: Slice | None = None
        self._open_keys = 0
        #: How many keys the open slice takes before it closes (see MAX_SLICE_KEYS).
        self._open_cap = SLICE_KEYS

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
        written: list[str] = []
        if unknown:
            seen = self._seen(cur, source, unknown, first, window_ms)
            fresh = [m for m in unknown if m not in seen]
            if self._clustered(cur, source, fresh, max(first.values())):
                assert self._open is not None
                written = sorted(fresh)
                self._write(cur, self._open, [(source, m, first[m]) for m in written])
            else:
                new += fresh
        undo = self._undo
        for message_id in new:
            key = (source, message_id)
            if key not in undo:
                undo[key] = recent.get(key)
            recent[key] = first[message_id]
        if new and self._recent_since is None:
            self._recent_since = first[new[0]]
        return {*new, *written}

    def _clustered(self, cur: sqlite3.Cursor, source: str, ids: list[str], now: int) -> bool:
        """Whether new keys (none of them in memory) go straight to the open slice in the
        commit, as a unique index would take them: when at most :data:`CLUSTER_GAP` keys of
        the slice sort between the smallest and the largest of them, so they land on a page or
        two (time-ordered or counter ids of one client); not when they are random (a page
        each: they wait in memory and go out sorted with thousands of others)."""
        if len(ids) < CLUSTER_MIN or self._open is None or self.slice_due(now):
            return False
        between = (
            f"SELECT count(*) FROM (SELECT 1 FROM {self._open.name} "
            f"WHERE source = ? AND message_id > ? AND message_id < ? LIMIT {CLUSTER_GAP + 1})"
        )
        return bool(cur.execute(between, (source, min(ids), max(ids))).fetchone()[0] <= CLUSTER_GAP)

    def _seen(
        self, cur: sqlite3.Cursor, source: str, ids: list[str], first: dict[str, int], window_ms: int
    ) -> set[str]:
        cutoff = min(first[m] for m in ids) - window_ms
        seen: set[str] = set()
        probed: list[tuple[str, int, int]] | None = None
        for each in self._slices:
            if each.end_ms <= cutoff:  # every key in it is past the window
                continue
            asked = ids
            bloom = self._filters.get(each)
            if bloom is not None:
                if probed is None:
                    probed = [(m, at, bits) for m, (at, bits) in zip(ids, probes(source, ids), strict=True)]
                words, size = bloom.words, len(bloom.words)
                asked = [m for m, at, bits in probed if words[at % size] & bits == bits]
                if not asked:
                    continue
            sql = self._seen_statement(each.name, len(asked))
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
        # A key a deletion forgot since the flush began stays out (its message may come again),
        # and so does one claimed again since: its newer copy goes with the next flush, and the
        # older one, kept here, would outlive a deletion of the newer one (which finds only it).
        recent = self._recent
        rows = [(s, m, at) for (s, m), at in part if recent.get((s, m)) == at]
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._write(conn.cursor(), target, rows)
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
        empty slice is harmless) when this process has none open yet, or it ended or is full."""
        before = self._open
        if before is not None and not self.slice_due(now):
            return before
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = self.open_slice(conn, now, window_ms)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if self._open is not before and self._open is not None:  # opened, not committed
                self._slices.remove(self._open)
                self._filters.pop(self._open, None)
            self._open = None  # the next flush opens one
            raise
        return new

    def slice_due(self, now: int) -> bool:
        """Whether keys received at ``now`` need a new slice: none opened by this process yet,
        or the open one ended or is full (:data:`SLICE_KEYS`, :data:`MAX_SLICE_KEYS`)."""
        return self._open is None or now >= self._open.end_ms or self._open_keys >= self._open_cap

    def open_slice(self, conn: sqlite3.Connection, now: int, window_ms: int) -> Slice:
        """Start a slice at ``now``, in the caller's transaction (the bulk writer's)."""
        names = {each.name for each in self._slices}
        name, copy = f"dedup_keys_{now}", 0
        while name in names:  # another opened in the same millisecond (full, or before a restart)
            copy += 1
            name = f"dedup_keys_{now}_{copy}"
        before = self._open
        filled_early = before is not None and self._open_keys >= self._open_cap and now < before.end_ms
        cap = min(self._open_cap * 2, MAX_SLICE_KEYS) if filled_early else SLICE_KEYS
        new = Slice(name, now, now + max(window_ms // SLICES_PER_WINDOW, 1))
        conn.execute(_SLICE_TABLE.format(name=new.name))
        conn.execute(
            "INSERT OR IGNORE INTO dedup_slices (name, start_ms, end_ms) VALUES (?, ?, ?)",
            (new.name, new.start_ms, new.end_ms),
        )
        # Its filter first: lookups find it with the slice (build_filters skips it).
        self._filters[new] = BloomFilter(cap)
        self._slices.append(new)
        self._open, self._open_keys, self._open_cap = new, 0, cap
        return new

    def _write(self, cur: sqlite3.Cursor, target: Slice, rows: list[tuple[str, str, int]]) -> None:
        """Write keys ``(source, message_id, received_at)``, sorted, to ``target``, in the
        caller's transaction. They go into its filter first (a filter may hold a key its slice
        does not, never the reverse)."""
        bloom = self._filters.get(target)
        if bloom is not None:
            for source, same_source in groupby(rows, key=itemgetter(0)):
                bloom.add(probes(source, [m for _, m, _ in same_source]))
        if target is self._open:
            self._open_keys += len(rows)
        statements = self._writes.get(target.name)
        if statements is None:
            statements = self._writes[target.name] = _write_statements(target.name)
        for part in chunks(rows):
            cur.execute(statements[len(part)], [v for row in part for v in row])

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
        rows = [(source, m, first[m]) for m in ids if m not in seen]
        assert self._open is not None, "the bulk writer opens a slice first"
        self._write(cur, self._open, rows)
        return {m for _, m, _ in rows}

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
            self._filters.pop(gone, None)
            self._writes.pop(gone.name, None)
            if gone is self._open:
                self._open = None
            dropped += 1
        return dropped

    def build_filters(self, path: Path) -> int:
        """Build the Bloom filter of each slice that has none, reading it on a connection of its
        own (in a worker thread: commits go on meanwhile). Only the slices found on open have
        none (or one a bulk writer made): this process writes no key to them, only a deletion
        removes some, which a filter may ignore. Returns how many were built."""
        built = 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            for each in list(self._slices):
                if each in self._filters:
                    continue
                try:
                    count = conn.execute(f"SELECT count(*) FROM {each.name}").fetchone()[0]
                    bloom = BloomFilter(count)
                    read = conn.execute(f"SELECT source, message_id FROM {each.name}")  # by source
                    for source, same_source in groupby(read, key=itemgetter(0)):
                        bloom.add(probes(source, [m for _, m in same_source]))
                except sqlite3.OperationalError:  # dropped meanwhile
                    continue
                if any(each is kept for kept in self._slices):  # not dropped meanwhile
                    self._filters[each] = bloom
                    built += 1
        finally:
            conn.close()
        return built

    def _seen_statement(self, name: str, rows: int) -> str:
        key = (name, rows)
        sql = self._sql.get(key)
        if sql is None:
            if len(self._sql) > 512:  # slices come and go
                self._sql.clear()
            sql = self._sql[key] = _seen_sql(name, rows)
        return sql


#: The 4,096 ways to set 2 bits of a 64-bit word, by 12 bits of a hash: a key's 4 bits in
#: its word are two table reads (computing them bit by bit cost 4 times as much in Python).
_TWO_BITS = [1 << (i & 63) | 1 << (i >> 6) for i in range(4096)]


def probes(source: str, message_ids: Iterable[str]) -> list[tuple[int, int]]:
    """Where each key goes in a :class:`BloomFilter`: a number to take modulo the filter's
    words (40 bits of the key's ``hash``), and the 4 bits of that word (from 24 others)."""
    two = _TWO_BITS
    return [((h := hash((source, m))) & 0xFF_FFFF_FFFF, two[h >> 40 & 4095] | two[h >> 52 & 4095]) for m in message_ids]


class BloomFilter:
    """A blocked Bloom filter of 64-bit hashes (Python's ``hash`` of the key: one process's
    filters are built and read by that process only): each key sets 4 bits of one 64-bit word,
    :data:`FILTER_BITS_PER_KEY` bits a key, so a check reads one word (:func:`probes`)."""

    __slots__ = ("words",)

    def __init__(self, keys: int) -> None:
        self.words = array("Q", bytes(8 * max(1, keys * FILTER_BITS_PER_KEY // 64)))

    def add(self, probed: Iterable[tuple[int, int]]) -> None:
        words, size = self.words, len(self.words)
        for at, bits in probed:
            words[at % size] |= bits

    def may_hold(self, source: str, message_id: str) -> bool:
        ((at, bits),) = probes(source, [message_id])
        return self.words[at % len(self.words)] & bits == bits


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
