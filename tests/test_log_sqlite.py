"""What only the SQLite engine does: group commit, explicit transactions, the data_dir lock,
schema upgrades, WAL upkeep, reads in one snapshot, and a deletion's bytes leaving the files.
The protocol's promises are in tests/log_conformance.py, run on every engine."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import trio

from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import Entry, open_log
from gateway.log import sqlite as sqlite_log
from gateway.log.sqlite import _upkeep


def entry(message_id: str, source: str = "web") -> Entry:
    return Entry(source, message_id, b'{"messageId":"%s"}' % message_id.encode())


def stored_ids(data_dir: Path) -> list[str]:
    conn = sqlite3.connect(data_dir / sqlite_log.DB_NAME)
    try:
        return [row[0].decode().split('"')[3] for row in conn.execute("SELECT body FROM messages ORDER BY seq")]
    finally:
        conn.close()


async def test_every_write_runs_inside_an_explicit_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The connections are in autocommit mode, where ``with conn:`` opens no transaction: a block
    # of writes in it committed statement by statement, and a crash could keep half of it (a
    # redriven dead letter gone without its ``redriven`` outcome, a cursor without its books).
    from gateway.components import Record
    from gateway.log import InventoryRow

    now = [1_000_000_000_000]
    outside: list[str] = []
    state = {"open": False}

    def trace(sql: str) -> None:
        verb = sql.lstrip().split(None, 1)[0].upper()
        if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
            state["open"] = verb == "BEGIN"
        elif verb in ("INSERT", "UPDATE", "DELETE", "REPLACE") and not state["open"]:
            outside.append(sql)

    async with open_log(LogConfig(dedup_window_secs=60, archive_secs=0), tmp_path, clock_ms=lambda: now[0]) as log:
        log._writer.set_trace_callback(trace)  # type: ignore[attr-defined]
        await log.cursor("crm")
        await log.append([entry("a"), Entry("web", "u", b'{"messageId":"u","userId":"gone"}'), entry("b")])
        await log.set_cursor("crm", 3, {("web", "delivered"): 3})
        await log.cursor("replay", start_ms=0)
        await log.add_dead_letters("crm", [Record(1, "web", b'{"messageId":"a"}')], "HTTP 400", 1)
        await log.change_dead_letters("redrive", destination="crm")
        [(letter_id, record, _)] = await log.take_redrive("crm", 10)
        await log.finish_redrive("crm", [(letter_id, record)], [], "")
        await log.set_suppressed("spam", True)
        await log.save_inventory([InventoryRow("web", "traits.email", "yellow", ("email",), now[0], now[0])])
        await log.delete_user("gone", ["crm", "replay"])
        now[0] += 120_000
        assert await log.purge(["crm"]) == 1  # "a"; "b" is the newest row
        await log.forget_cursor("replay")
    assert outside == []


async def test_one_data_dir_serves_one_gateway(tmp_path: Path) -> None:
    # Two gateways on one log each delivered what the other stored (1,766 duplicates in an
    # adversarial test) and their books stopped balancing.
    async with open_log(LogConfig(), tmp_path) as log:
        await log.append([entry("a")])
        with pytest.raises(LogUnavailableError, match=rf"in use by another gateway \(pid {os.getpid()}\)"):
            async with open_log(LogConfig(), tmp_path):
                pass
        assert (await log.append([entry("b")])).stored == 1  # the first one is untouched
    async with open_log(LogConfig(), tmp_path) as log:  # released with the log
        assert (await log.append([entry("a")])).duplicates == 1


async def test_a_log_that_cannot_be_opened_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / sqlite_log.DB_NAME).mkdir()  # not a database
    with pytest.raises(LogUnavailableError, match=f"cannot open the log {tmp_path / sqlite_log.DB_NAME}"):
        async with open_log(LogConfig(), tmp_path):
            pass


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    async with open_log(LogConfig(), tmp_path) as log:
        results = []

        async def one(i: int) -> None:
            results.append(await log.append([entry(f"m{i}")]))

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        assert sum(r.stored for r in results) == 200
        commits = log.statistics().commits
        assert commits < 100, f"{commits} commits for 200 concurrent appends: no group commit"
    assert len(stored_ids(tmp_path)) == 200


async def test_a_log_from_before_dead_letter_stages_is_upgraded_in_place(tmp_path: Path) -> None:
    from gateway.components import Record

    with sqlite3.connect(tmp_path / sqlite_log.DB_NAME) as old:
        old.execute(
            "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, destination TEXT NOT NULL, seq INTEGER NOT NULL, "
            "source TEXT NOT NULL, body BLOB NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, "
            "failed_at INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'dead')"
        )
        old.execute("INSERT INTO dead_letters VALUES (1, 'crm', 7, 'web', '{}', 'HTTP 400', 1, 0, 'dead')")
    async with open_log(LogConfig(), tmp_path) as log:
        await log.add_dead_letters("source:web", [Record(0, "web", b'{"messageId":"m"}')], "boom", 1, stage="source")
        letters = await log.dead_letters()
    assert [(x.destination, x.stage, x.error) for x in letters] == [
        ("crm", "send", "HTTP 400"),
        ("source:web", "source", "boom"),
    ]


async def test_the_wal_stays_bounded_under_sustained_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Commits that never pause keep passive checkpoints from ever resetting the WAL; without a
    # restart past the bound it grew by everything written (660 MB in 25 s of bench/ingest.py).
    monkeypatch.setattr(_upkeep, "WAL_RESTART_BYTES", 1024 * 1024)
    wal = tmp_path / f"{sqlite_log.DB_NAME}-wal"
    body = b"x" * 2000
    largest = 0
    written = 0
    async with open_log(LogConfig(), tmp_path) as log:

        async def write(task: int) -> None:
            nonlocal written
            for batch in range(100):
                await log.append([Entry("web", f"{task}-{batch}-{i}", body) for i in range(50)])
                written += 50 * len(body)

        async def read_and_checkpoint() -> None:
            nonlocal largest
            while True:
                await log.read(0, max_records=100, max_bytes=1 << 20)
                await log.checkpoint()
                largest = max(largest, wal.stat().st_size)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_and_checkpoint)
            async with trio.open_nursery() as writers:
                for task in range(4):
                    writers.start_soon(write, task)
            nursery.cancel_scope.cancel()
    assert written >= 30 * 1024 * 1024
    assert largest < 8 * 1024 * 1024, f"the WAL reached {largest / 1024 / 1024:.0f} MiB"


async def test_a_reader_in_another_process_postpones_the_wal_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart must wait for every reader to leave the WAL, and commits wait behind it: with
    # another process's reader in the way it gives up at once and is not tried again until the
    # backoff has passed, so commits are never held up checkpoint after checkpoint.
    monkeypatch.setattr(_upkeep, "WAL_RESTART_BYTES", 64 * 1024)
    monkeypatch.setattr(_upkeep, "WAL_RESTART_BACKOFF_SECS", (30.0, 30.0))
    now = [1000.0]
    monkeypatch.setattr(_upkeep, "monotonic", lambda: now[0])
    wal = tmp_path / f"{sqlite_log.DB_NAME}-wal"
    body = b"x" * 2000
    async with open_log(LogConfig(), tmp_path) as log:
        tries: list[str] = []
        upkeep = log._upkeep  # type: ignore[attr-defined]
        reset_wal = upkeep.reset_wal

        async def counted(mode: str, wait_ms: int) -> bool:
            tries.append(mode)
            return await reset_wal(mode, wait_ms)

        upkeep.reset_wal = counted
        await log.append([Entry("web", f"a{i}", body) for i in range(100)])
        reader = sqlite3.connect(tmp_path / sqlite_log.DB_NAME, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # holds a snapshot in the WAL
        try:
            await log.checkpoint()
            await log.checkpoint()
            assert tries == ["RESTART"]  # busy once, then backing off
            assert (await log.append([Entry("web", "b", body)])).stored == 1
            now[0] += 29.9
            await log.checkpoint()
            assert tries == ["RESTART"]  # still backing off
        finally:
            reader.close()
        now[0] += 0.2
        await log.checkpoint()
        assert tries == ["RESTART", "RESTART"]
        await log.append([Entry("web", "c", body)])  # starts the WAL over, cut to the limit
        assert wal.stat().st_size <= 64 * 1024
        await log.checkpoint()
        assert tries == ["RESTART", "RESTART"]  # what the WAL holds now is small: no restart


async def test_the_books_are_read_in_one_snapshot_while_the_daemon_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `gateway audit` reads the file while the daemon delivers. Read statement by statement, a
    # delivery committed between reading the head and reading a cursor's outcomes counted
    # messages above the head it had read: "NOT BALANCED", exit 3, with nothing wrong.
    from gateway.log import open_log_reader
    from gateway.log.sqlite import _reads
    from gateway.ops.audit import audit

    async with open_log(LogConfig(), tmp_path) as log:
        await log.cursor("crm")
        await log.append([entry("a"), entry("b")])
        await log.set_cursor("crm", 2, {("web", "delivered"): 2})
        cursor_books = _reads._cursor_books

        def delivered_meanwhile(conn: sqlite3.Connection, *args: object) -> object:
            # What the daemon commits while the reader is between two statements.
            with sqlite3.connect(tmp_path / sqlite_log.DB_NAME, isolation_level=None) as other:
                other.execute("BEGIN IMMEDIATE")
                other.execute("INSERT INTO messages VALUES (3, 'web', 'c', 0, x'7b7d')")
                other.execute("UPDATE cursors SET seq = 3 WHERE destination = 'crm'")
                other.execute("INSERT INTO delivery_outcomes VALUES ('crm', 'web', 'delivered', 1, 3, 0)")
                other.execute("COMMIT")
            return cursor_books(conn, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(_reads, "_cursor_books", delivered_meanwhile)
        async with open_log_reader(LogConfig(), tmp_path) as reader:
            report = audit(await reader.books())
    [crm] = report.destinations
    assert (crm.head, crm.delivered, crm.pending) == (2, 2, 0), crm
    assert report.balanced


async def test_a_deletion_leaves_none_of_the_users_bytes_in_the_files(tmp_path: Path) -> None:
    # secure_delete zeroes the freed pages, and the WAL (which holds page images from before
    # the deletion) is checkpointed and truncated; the request itself is recorded.
    secret = b"PLUTONIUM-7731"

    def message(i: int, user: str) -> Entry:
        note = secret if user == "user-42" else b"nothing"
        return Entry("web", f"m{i}", b'{"messageId":"m%d","userId":"%s","note":"%s"}' % (i, user.encode(), note))

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.glob(f"{sqlite_log.DB_NAME}*"))

    async with open_log(LogConfig(), tmp_path) as log:
        await log.cursor("d")
        await log.append([message(i, user) for i, user in enumerate(["a", "user-42", "b", "user-42", "c"])])
        await log.set_cursor("d", 5, {("web", "delivered"): 5})
        assert secret in on_disk()
        report = await log.delete_user("user-42", ["d"])
        assert (report.messages_deleted, report.tombstoned) == (2, 0)
        assert secret not in on_disk()
    conn = sqlite3.connect(tmp_path / sqlite_log.DB_NAME)
    try:
        assert conn.execute("SELECT user_id, messages_deleted FROM deletion_requests").fetchall() == [("user-42", 2)]
    finally:
        conn.close()


async def test_a_log_with_the_unique_index_of_schema_1_moves_its_keys_to_a_dedup_slice(tmp_path: Path) -> None:
    now = 1_800_000_000_000
    with sqlite3.connect(tmp_path / sqlite_log.DB_NAME) as old:
        old.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, message_id TEXT NOT NULL, "
            "received_at INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        old.execute("CREATE UNIQUE INDEX messages_by_key ON messages (source, message_id)")
        old.executemany(
            "INSERT INTO messages (source, message_id, received_at, body) VALUES ('web', ?, ?, '{}')",
            [("old", now - 61_000), ("recent", now - 59_000)],
        )
    config = LogConfig(dedup_window_secs=60)
    async with open_log(config, tmp_path, clock_ms=lambda: now) as log:
        result = await log.append([entry("recent"), entry("old"), entry("new")])
        assert (result.stored, result.duplicates) == (2, 1)  # "old" was past the window
        assert log.head() == 4
    with sqlite3.connect(tmp_path / sqlite_log.DB_NAME) as conn:
        indexes = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
        assert "messages_by_key" not in indexes
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    async with open_log(config, tmp_path, clock_ms=lambda: now + 1) as log:  # opened again: nothing to move
        assert (await log.append([entry("recent"), entry("new")])).duplicates == 2


async def test_the_dedup_keys_are_bounded_by_the_window_not_the_archive(tmp_path: Path) -> None:
    now = [1_800_000_000_000]
    config = LogConfig(dedup_window_secs=100, archive_secs=100_000)
    async with open_log(config, tmp_path, clock_ms=lambda: now[0]) as log:
        for step in range(40):  # 40 x 10 s = four windows, every message kept (the archive)
            await log.append([entry(f"m{step}-{i}") for i in range(50)])
            now[0] += 10_000
            await log.purge([])
    with sqlite3.connect(tmp_path / sqlite_log.DB_NAME) as conn:
        slices = [name for (name,) in conn.execute("SELECT name FROM dedup_slices")]
        keys = sum(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in slices)
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'dedup_keys_%'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2000
    # The window (10 appends) and at most a slice (a quarter window) more, in 4-6 slices.
    assert 500 <= keys <= 500 + 150, keys
    assert 4 <= len(slices) == tables <= 6


async def test_the_bulk_writer_fills_a_log_that_dedups_as_appends_do(tmp_path: Path) -> None:
    now = 1_800_000_000_000
    config = LogConfig(dedup_window_secs=100, archive_secs=1000)
    # 1,000 s of history, a row per 0.1 s, with a copy of every 100th row 50 s after it.
    rows = [("web", f"m{i}", now - 1_000_000 + i * 100, b'{"messageId":"m%d"}' % i) for i in range(10_000)]
    copies = [("web", f"m{i}", at + 50_000, body) for _, i_id, at, body in rows[::100] for i in [int(i_id[1:])]]
    history = sorted(rows + copies, key=lambda row: row[2])
    stored = await trio.to_thread.run_sync(
        lambda: sqlite_log.bulk_load(config, tmp_path, history, clock_ms=lambda: now)
    )
    # Rows older than the window get no key, so their copies are stored; the window's are not.
    in_window_copies = sum(1 for _, _, at, _ in copies if at - 50_000 >= now - 100_000)
    assert stored == len(history) - in_window_copies
    async with open_log(config, tmp_path, clock_ms=lambda: now) as log:
        assert log.head() == stored
        assert (await log.append([entry("m9999"), entry("m9000"), entry("m100")])).duplicates == 2
        with pytest.raises(LogUnavailableError, match="in use by another gateway"):
            sqlite_log.bulk_load(config, tmp_path, [])
    with pytest.raises(ValueError, match="goes back"):
        sqlite_log.bulk_load(config, tmp_path, [("web", "late", now - 1, b"{}")])


async def test_a_failed_commit_takes_back_the_keys_it_claimed(tmp_path: Path) -> None:
    async with open_log(LogConfig(), tmp_path) as log:
        writer: sqlite3.Connection = log._writer  # type: ignore[attr-defined]
        # The keys are claimed first; the row after them makes the transaction fail.
        writer.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.message_id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        with pytest.raises(LogUnavailableError):
            await log.append([entry("a"), entry("boom")])
        writer.execute("DROP TRIGGER refuse")
        assert (await log.append([entry("a"), entry("boom")])).stored == 2


async def test_the_keys_in_memory_go_to_their_slice_and_a_restart_reads_only_the_tail(tmp_path: Path) -> None:
    from gateway.log.sqlite import _dedup

    now = [1_800_000_000_000]
    async with open_log(LogConfig(), tmp_path, clock_ms=lambda: now[0]) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        await log.append([entry(f"m{i}") for i in range(30)])
        await log.checkpoint()
        assert (dedup.waiting, dedup.flushed_seq) == (30, 0)  # too few, too recent
        now[0] += _dedup.FLUSH_AGE_MS
        await log.checkpoint()
        assert (dedup.waiting, dedup.flushed_seq) == (0, 30)
        await log.append([entry("m30"), entry("m0")])
        assert dedup.waiting == 1
    async with open_log(LogConfig(), tmp_path, clock_ms=lambda: now[0]) as log:
        dedup = log._dedup  # type: ignore[attr-defined]
        assert (dedup.waiting, dedup.flushed_seq) == (1, 30)  # m30, read back from its message
        assert (await log.append([entry("m30"), entry("m29"), entry("m31")])).duplicates == 2


async def test_the_bloom_filters_of_the_slices_never_hide_a_duplicate_also_after_a_restart(tmp_path: Path) -> None:
    from gateway.log.sqlite import _dedup

    now = [1_800_000_000_000]
    config = LogConfig(dedup_window_secs=400)
    async with open_log(config, tmp_path, clock_ms=lambda: now[0]) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        for step in range(4):  # four slices of 100 s, 500 keys each
            await log.append([entry(f"m{step}-{i}") for i in range(500)])
            now[0] += 100_000
            await log.purge([])  # writes the keys out to a slice opened then
        assert len(dedup.slices) == 4
        # Each slice got its filter when it opened, and every key before it was written.
        assert await trio.to_thread.run_sync(dedup.build_filters, tmp_path / sqlite_log.DB_NAME) == 0
        old = [entry(f"m{step}-{i}") for step in range(1, 4) for i in range(500)]  # within the window
        assert (await log.append(old)).duplicates == 1500
    async with open_log(config, tmp_path, clock_ms=lambda: now[0]) as log:
        dedup = log._dedup  # type: ignore[attr-defined]
        assert (await log.append(old[:700])).duplicates == 700  # no filters yet: looked up
        await log.append([entry(f"after-{i}") for i in range(300)])
        await log.purge([])  # a slice of this process's own, with its filter
        # The slices found on open get theirs, rebuilt from their keys (and the one the longer
        # reach of the window back added from the messages on open, see DedupSlices.cover).
        assert await trio.to_thread.run_sync(dedup.build_filters, tmp_path / sqlite_log.DB_NAME) == 5
        assert (await log.append(old)).duplicates == 1500
        assert (await log.append([entry(f"after-{i}") for i in range(300)])).duplicates == 300
        fresh = await log.append([entry(f"new-{i}") for i in range(2000)])
        assert fresh.stored == 2000


async def test_a_slice_closes_once_it_holds_slice_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The slice being written stays small (its random pages must stay in the writer's cache);
    # one that fills up before its time ends makes the next twice as large (few slices a window).
    from gateway.log.sqlite import _dedup

    monkeypatch.setattr(_dedup, "SLICE_KEYS", 100)
    monkeypatch.setattr(_dedup, "FLUSH_CHUNK", 64)
    async with open_log(LogConfig(), tmp_path) as log:
        dedup: _dedup.DedupSlices = log._dedup  # type: ignore[attr-defined]
        await log.append([entry(f"m{i}") for i in range(1000)])
        await log.purge([])
        assert dedup.waiting == 0
        with sqlite3.connect(tmp_path / sqlite_log.DB_NAME) as conn:
            sizes = [conn.execute(f"SELECT count(*) FROM {each.name}").fetchone()[0] for each in dedup.slices]
        assert sum(sizes) == 1000
        # Each closed at the first chunk that reached its size: 100, 200, 400, ...
        assert all(size <= 100 * 2**i + 64 for i, size in enumerate(sizes)), sizes
        assert len(sizes) <= 4, sizes
        assert (await log.append([entry(f"m{i}") for i in range(1000)])).duplicates == 1000


def test_a_bloom_filter_holds_every_key_it_was_given() -> None:
    from gateway.log.sqlite._dedup import BloomFilter, probes

    keys = [f"key-{i}" for i in range(20_000)]
    bloom = BloomFilter(len(keys))
    bloom.add(probes("web", keys))
    assert all(bloom.may_hold("web", key) for key in keys)
    others = sum(bloom.may_hold("web", f"other-{i}") for i in range(20_000))
    assert others < 20_000 * 0.01, others  # about 0.5% false positives when full
    assert sum(bloom.may_hold("app", key) for key in keys) < 20_000 * 0.01  # the source is in the key


async def test_a_failing_dedup_flush_does_not_stop_the_checkpoint(tmp_path: Path) -> None:
    """On a full disk the keys waiting in memory cannot be written (a page per random key);
    the checkpoint (which re-measures the disk for /ready) must still run, and the keys stay
    in memory for the next flush: a duplicate is still refused once writes work again."""
    from tests.log_engines import SQLiteEngine

    engine = SQLiteEngine(tmp_path)
    now = [1_800_000_000_000]
    async with engine.open(clock_ms=lambda: now[0]) as log:
        await log.append([Entry("web", f"m-{n}", b"{}") for n in range(50)])
        now[0] += 60_000  # the keys are due to be flushed
        with engine.failing_commits(log):
            await log.checkpoint()  # no LogUnavailableError from the flush
        await log.checkpoint()
        await log.purge([])
        assert (await log.append([Entry("web", "m-7", b"{}")])).duplicates == 1
    async with engine.open(clock_ms=lambda: now[0]) as log:
        assert (await log.append([Entry("web", "m-8", b"{}")])).duplicates == 1


async def test_the_files_stay_within_max_disk_bytes_as_random_keys_are_written_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The size is measured at checkpoints and estimated between them from the rows committed;
    # the dedup keys written out (a 4 KiB page per random key) and cursor saves are not in the
    # estimate, so without a reserve the files went past the bound (0.5% in bench/log_growth.py).
    import uuid

    from gateway.log.sqlite import _dedup

    monkeypatch.setattr(_dedup, "FLUSH_KEYS", 500)  # keys go out as often as under heavy load
    bound = 8 * 1024 * 1024
    largest = 0
    refused = False

    def on_disk() -> int:
        return sum(p.stat().st_size for p in tmp_path.glob(f"{sqlite_log.DB_NAME}*"))

    async with open_log(LogConfig(max_disk_bytes=bound), tmp_path) as log:
        await log.cursor("down")  # a destination that never reads: nothing is purged
        for _ in range(400):
            try:
                await log.append([Entry("web", str(uuid.uuid4()), b"x" * 300) for _ in range(200)])
            except LogUnavailableError as error:
                assert error.reason == "log_full"
                refused = True
            await log.checkpoint()
            largest = max(largest, on_disk())
            if refused:
                break
        await log.purge(["down"])  # forces the last keys out
        await log.checkpoint()
        largest = max(largest, on_disk())
    assert refused, "the log never filled up"
    assert largest <= bound, f"the files reached {largest:,} bytes, past max_disk_bytes {bound:,}"
