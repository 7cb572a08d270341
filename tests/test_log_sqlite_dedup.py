"""The SQLite log's dedup slices under what upsets them: a deletion request between the steps
of a flush, a clock set back before a schema 1 log moves its keys, a window grown past the
rows the bulk writer gave no key; and random traffic with all of these, restarts and reloads,
checked against a model of exact dedup. (The promises every engine keeps are in
tests/log_conformance.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from gateway.config import LogConfig
from gateway.log import Entry, open_log
from gateway.log import sqlite as sqlite_log
from gateway.log.sqlite import DB_NAME, _bulk, _dedup, _engine, _schema


def entry(message_id: str, user_id: str = "someone") -> Entry:
    return Entry("web", message_id, b'{"messageId":"%s","userId":"%s"}' % (message_id.encode(), user_id.encode()))


async def test_a_deletion_between_the_steps_of_a_flush_does_not_bring_its_keys_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deleted message may be sent again (its key is forgotten). A flush writes the keys it took
    # from memory over several transactions; a deletion in between forgot a key still to come,
    # and the next step wrote it to the slice: the message sent again was a duplicate.
    monkeypatch.setattr(_dedup, "FLUSH_CHUNK", 1)
    now = [1_800_000_000_000]
    config = LogConfig(dedup_window_secs=600)
    async with open_log(config, tmp_path, clock_ms=lambda: now[0]) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        writer: sqlite3.Connection = log._writer  # type: ignore[attr-defined]
        await log.append([entry("a"), entry("z", user_id="gone"), entry("b")])
        # The first step writes "a" (the keys go sorted: a, b, z), one key per step here.
        assert await trio.to_thread.run_sync(dedup.flush_step, writer, log.head(), now[0], 600_000)
        report = await log.delete_user("gone", [])
        assert report.messages_deleted == 1
        await log.purge([])  # finishes the flush
        assert dedup.waiting == 0
        assert (await log.append([entry("z", user_id="gone")])).stored == 1


async def test_a_schema_1_log_written_before_the_clock_was_set_back_keeps_its_newest_keys(tmp_path: Path) -> None:
    # The slice a schema 1 log's keys move to must end after the newest of them, also when that
    # one was received later than the clock says now: lookups skip a slice that ended a window ago.
    now = 1_800_000_000_000
    with sqlite3.connect(tmp_path / DB_NAME) as old:
        old.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, message_id TEXT NOT NULL, "
            "received_at INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        old.execute("CREATE UNIQUE INDEX messages_by_key ON messages (source, message_id)")
        old.execute(
            "INSERT INTO messages (source, message_id, received_at, body) VALUES ('web', 'ahead', ?, '{}')",
            (now + 50_000,),
        )
    config = LogConfig(dedup_window_secs=60)
    async with open_log(config, tmp_path, clock_ms=lambda: now) as log:  # the clock was set back
        assert (await log.append([entry("ahead")])).duplicates == 1
    async with open_log(config, tmp_path, clock_ms=lambda: now + 100_000) as log:  # 50 s after it
        assert (await log.append([entry("ahead")])).duplicates == 1


async def test_the_rows_the_bulk_writer_gave_no_key_get_one_when_the_window_grows(tmp_path: Path) -> None:
    # Rows older than the window get no key from the bulk writer; a longer window (restart) has
    # their keys written from the messages, as it has those of dropped slices.
    now = 1_800_000_000_000
    rows = [("web", f"m{i}", now - 500_000 + i * 1000, b'{"messageId":"m%d"}' % i) for i in range(500)]
    assert await trio.to_thread.run_sync(
        lambda: sqlite_log.bulk_load(LogConfig(dedup_window_secs=100), tmp_path, rows, clock_ms=lambda: now)
    ) == len(rows)
    async with open_log(LogConfig(dedup_window_secs=100), tmp_path, clock_ms=lambda: now) as log:
        assert (await log.append([entry("m0"), entry("m450")])).duplicates == 1  # m0: 500 s ago
    async with open_log(LogConfig(dedup_window_secs=1000), tmp_path, clock_ms=lambda: now + 1) as log:
        assert (await log.append([entry("m1"), entry("m499"), entry("m0")])).duplicates == 3


async def test_a_key_deleted_sent_again_and_deleted_again_during_a_flush_is_not_left_in_a_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flush takes its keys from memory at its first step. A key deleted, then sent again (a
    # newer received_at in memory) before its step came, must not be written with the old time:
    # the second deletion forgets the newer copy only, and the old one in the slice refused the
    # message sent a third time.
    monkeypatch.setattr(_dedup, "FLUSH_CHUNK", 1)
    now = [1_800_000_000_000]
    config = LogConfig(dedup_window_secs=600)
    async with open_log(config, tmp_path, clock_ms=lambda: now[0]) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        writer: sqlite3.Connection = log._writer  # type: ignore[attr-defined]
        await log.append([entry("a"), entry("z", user_id="gone"), entry("b")])
        head = log.head()
        # One key a step, sorted: a, b, z.
        assert await trio.to_thread.run_sync(dedup.flush_step, writer, head, now[0], 600_000)
        assert (await log.delete_user("gone", [])).messages_deleted == 1
        now[0] += 1000
        assert (await log.append([entry("z", user_id="gone"), entry("c")])).stored == 2  # "c": z is not the head
        while await trio.to_thread.run_sync(dedup.flush_step, writer, head, now[0], 600_000):
            pass
        assert (await log.delete_user("gone", [])).messages_deleted == 1
        now[0] += 1000
        assert (await log.append([entry("z", user_id="gone")])).stored == 1


class _Model:
    """What exact dedup answers: a key is a duplicate while its newest stored copy is at most a
    window old (the archive keeps every message here, so a longer window reaches them all)."""

    def __init__(self) -> None:
        self.stored_at: dict[tuple[str, str], int] = {}

    def append(self, batch: list[tuple[str, str]], now: int, window_ms: int) -> int:
        stored, seen = 0, set()
        for key in batch:
            at = self.stored_at.get(key)
            if key not in seen and (at is None or now - at > window_ms):
                self.stored_at[key] = now
                stored += 1
            seen.add(key)
        return stored


@pytest.mark.parametrize("seed", range(12))
async def test_random_traffic_restarts_reloads_clock_steps_and_deletions_keep_dedup_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # Small flushes and slices, so keys are in memory, mid-flush and in slices, with or without
    # their Bloom filters (a restart finds slices without), at every step; the clock
    # goes forward by slice and window edges and back a little; windows change both ways.
    import random

    monkeypatch.setattr(_dedup, "FLUSH_CHUNK", 5)
    monkeypatch.setattr(_dedup, "FLUSH_KEYS", 7)
    monkeypatch.setattr(_dedup, "FLUSH_AGE_MS", 3000)
    monkeypatch.setattr(_dedup, "SLICE_KEYS", 6)  # slices close by their keys too
    rnd = random.Random(seed)
    # Every other seed writes new keys straight to the open slice in their commit (25 keys: they
    # are always within CLUSTER_GAP of each other).
    monkeypatch.setattr(_dedup, "CLUSTER_MIN", 2 if seed % 2 else 1000)
    now, window = [1_800_000_000_000], rnd.choice([4, 10, 40])
    model, history = _Model(), []

    def config() -> LogConfig:
        return LogConfig(dedup_window_secs=window, archive_secs=100_000)

    def message(source: str, key: str) -> Entry:
        return Entry(source, key, b'{"messageId":"%s","userId":"%s"}' % (key.encode(), key.encode()))

    opened = open_log(config(), tmp_path, clock_ms=lambda: now[0])
    log = await opened.__aenter__()
    try:
        for _ in range(200):
            op = rnd.random()
            if op < 0.45:
                batch = [(rnd.choice(["web", "app"]), f"k{rnd.randrange(25)}") for _ in range(rnd.randint(1, 6))]
                stored = (await log.append([message(*key) for key in batch])).stored
                history.append((now[0], batch, stored))
                assert stored == model.append(batch, now[0], window * 1000), (seed, history[-10:])
            elif op < 0.65:
                now[0] += rnd.choice(
                    [1, 250, 999, 1000, 1001, 2500, 5000, window * 250, window * 1000, window * 1000 + 1]
                )
            elif op < 0.70:
                now[0] -= rnd.choice([1, 1000, 3000, window * 500])
                history.append(("back", now[0]))
            elif op < 0.80:
                await log.purge([])
            elif op < 0.85:
                await log.checkpoint()
            elif op < 0.88:  # the slices found on open get their filters (commits go on meanwhile)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.to_thread.run_sync, log._dedup.build_filters, tmp_path / DB_NAME)  # type: ignore[attr-defined]
                    batch = [(rnd.choice(["web", "app"]), f"k{rnd.randrange(25)}") for _ in range(rnd.randint(1, 6))]
                    stored = (await log.append([message(*key) for key in batch])).stored
                assert stored == model.append(batch, now[0], window * 1000), (seed, history[-10:])
            elif op < 0.94:
                await opened.__aexit__(None, None, None)
                window = rnd.choice([window, 4, 10, 40])
                opened = open_log(config(), tmp_path, clock_ms=lambda: now[0])
                log = await opened.__aenter__()
                history.append(("restart", window))
            elif op < 0.97:
                window = rnd.choice([4, 10, 40])
                log.reconfigure(config())
                history.append(("reload", window))
            else:  # each key's messages carry it as their userId
                key = f"k{rnd.randrange(25)}"
                report = await log.delete_user(key, [])
                if report.tombstoned:  # the newest row keeps its key: the model stops here
                    break
                model.stored_at.pop(("web", key), None)
                model.stored_at.pop(("app", key), None)
    finally:
        await opened.__aexit__(None, None, None)


async def test_keys_and_rows_fit_the_variable_limit_of_old_sqlite_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys and rows go in as multi-row statements, whatever the batch's size; SQLite builds
    # before 3.32 allow 999 variables a statement (Debian's 3.40 allows 250,000).
    def connect_999(path: Path, synchronous: str, cache_kib: int, wal_limit: int) -> sqlite3.Connection:
        conn = _schema.connect(path, synchronous, cache_kib, wal_limit)
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        with pytest.raises(sqlite3.OperationalError, match="too many SQL variables"):
            conn.execute("SELECT " + ", ".join(["?"] * 1000), [0] * 1000)
        return conn

    monkeypatch.setattr(_engine, "connect", connect_999)
    monkeypatch.setattr(_bulk, "connect", connect_999)
    now = 1_800_000_000_000
    config = LogConfig(dedup_window_secs=600)
    rows = [("web", f"bulk{i}", now, b'{"messageId":"bulk%d"}' % i) for i in range(3000)]
    assert sqlite_log.bulk_load(config, tmp_path, rows + rows[:500], clock_ms=lambda: now) == 3000
    async with open_log(config, tmp_path, clock_ms=lambda: now) as log:
        batch = [entry(f"m{i}") for i in range(3000)] + [entry("bulk7"), entry("m5")]
        assert (await log.append(batch)).stored == 3000
        await log.purge([])  # writes the keys out
        assert log._dedup.waiting == 0  # type: ignore[attr-defined]
        again = [entry(f"m{i}") for i in range(0, 6000, 2)] + [entry(f"bulk{i}") for i in range(2990, 3010)]
        assert (await log.append(again)).stored == 1500 + 10


async def test_a_key_of_a_dropped_slice_is_a_duplicate_again_after_the_clock_is_set_back(tmp_path: Path) -> None:
    # A slice goes once its end is a window ago; the clock set back after that brings some of
    # its keys back inside the window: they are read back from the messages (as for a window grown).
    start = 1_800_000_000_000
    now = [start]
    async with open_log(LogConfig(dedup_window_secs=10), tmp_path, clock_ms=lambda: now[0]) as log:
        await log.append([entry("a")])
        await log.purge([])  # the keys go out: a slice [start, start + 2.5 s)
        now[0] = start + 2400
        await log.append([entry("k")])
        await log.purge([])  # "k" goes to that slice
        now[0] = start + 2500
        await log.append([entry("x")])
        await log.purge([])  # a new slice
        now[0] = start + 12_500
        await log.purge([])
        assert len(log._dedup.slices) == 1  # type: ignore[attr-defined]  # the first one was dropped
        now[0] = start + 11_500  # "k" was received 9.1 s before
        assert (await log.append([entry("k"), entry("a")])).stored == 1


async def test_a_filter_built_for_a_slice_dropped_meanwhile_never_stands_for_a_later_slice_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filters of the slices found on open are built in a thread while purges go on: one
    # dropped during its build got its filter installed after the drop. A slice made later
    # under the same name (the keys of a window grown, starting where it started) was then
    # looked up through that filter, which lacks its keys.
    start = 1_800_000_000_000
    now = [start]
    async with open_log(LogConfig(dedup_window_secs=10), tmp_path, clock_ms=lambda: now[0]) as log:
        for at, key in ((0, "a"), (2500, "b"), (5000, "c")):  # a slice each
            now[0] = start + at
            await log.append([entry(key)])
            await log.purge([])
    now[0] = start + 15_000  # the slices of "a" and "b" are past the window
    async with open_log(LogConfig(dedup_window_secs=10), tmp_path, clock_ms=lambda: now[0]) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        writer: sqlite3.Connection = log._writer  # type: ignore[attr-defined]
        assert dedup.slices[0].name == f"dedup_keys_{start}"
        probes = _dedup.probes

        def probes_while_purging(source: str, message_ids: list[str]) -> list[tuple[int, int]]:
            if len(dedup.slices) == 3:  # building the first slice's filter: the purge drops two
                assert dedup.drop_expired(writer, now[0], 10_000) == 2
            return probes(source, message_ids)

        monkeypatch.setattr(_dedup, "probes", probes_while_purging)
        dedup.build_filters(tmp_path / DB_NAME)
        monkeypatch.setattr(_dedup, "probes", probes)
        log.reconfigure(LogConfig(dedup_window_secs=15))  # their keys come back, into dedup_keys_<start>
        assert (await log.append([entry("b")])).duplicates == 1  # received 12.5 s ago


async def test_clustered_keys_go_to_the_open_slice_in_their_commit_and_random_ones_wait(tmp_path: Path) -> None:
    import uuid

    async with open_log(LogConfig(), tmp_path) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        earlier = [str(uuid.uuid4()) for _ in range(512)]
        await log.append([entry(m) for m in earlier])  # no slice open yet: they wait
        assert dedup.waiting == 512
        await log.purge([])  # writes them out to a slice it opens
        random_ids = [str(uuid.uuid4()) for _ in range(128)]  # ~500 keys of the slice between them
        await log.append([entry(m) for m in random_ids])
        assert dedup.waiting == 128
        clustered = [f"run-0001-{i:06d}" for i in range(128)]  # one chunk of a commit
        await log.append([entry(m) for m in clustered])
        assert dedup.waiting == 128
        with sqlite3.connect(tmp_path / DB_NAME) as conn:
            held = sum(conn.execute(f"SELECT count(*) FROM {each.name}").fetchone()[0] for each in dedup.slices)
        assert held == 512 + 128
        again = [entry(m) for m in earlier + random_ids + clustered]
        assert (await log.append(again)).duplicates == 768
    async with open_log(LogConfig(), tmp_path) as log:
        assert (await log.append(again)).duplicates == 768


async def test_slices_that_fill_up_early_grow_so_a_busy_window_keeps_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every new key is checked against each slice's filter: with slices of a fixed number of
    # keys, a window at a high rate held hundreds (88 µs a key at 330). Each slice that fills
    # before its time ends makes the next twice as large, so 4 + 8 + 16 + 32 + 64 keys take 5.
    import uuid

    monkeypatch.setattr(_dedup, "SLICE_KEYS", 4)
    monkeypatch.setattr(_dedup, "FLUSH_KEYS", 3)
    now = [1_800_000_000_000]
    keys = [str(uuid.uuid4()) for _ in range(124)]
    async with open_log(LogConfig(dedup_window_secs=3600), tmp_path, clock_ms=lambda: now[0]) as log:
        for start in range(0, len(keys), 4):
            assert (await log.append([Entry("web", k, b"{}") for k in keys[start : start + 4]])).stored == 4
            await log.checkpoint()  # writes the keys out to the open slice
            now[0] += 1000
        names = [each.name for each in log._dedup.slices]  # type: ignore[attr-defined]
        assert len(names) <= 6, names
        # Exact all the same: every key again is a duplicate, a new one is not.
        again = await log.append([Entry("web", k, b"{}") for k in keys])
        assert (again.stored, again.duplicates) == (0, len(keys))
        assert (await log.append([Entry("web", "new", b"{}")])).stored == 1
    # After a restart too (the slices found on open are looked up, then get their filters).
    async with open_log(LogConfig(dedup_window_secs=3600), tmp_path, clock_ms=lambda: now[0]) as log:
        assert (await log.append([Entry("web", k, b"{}") for k in keys])).duplicates == len(keys)
