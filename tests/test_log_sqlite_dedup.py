"""The SQLite log's dedup slices under what upsets them: a deletion request between the steps
of a flush, a clock set back before a schema 1 log moves its keys, a window grown past the
rows the bulk writer gave no key. (The promises every engine keeps are in tests/log_conformance.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from gateway.config import LogConfig
from gateway.log import Entry, open_log
from gateway.log import sqlite as sqlite_log
from gateway.log.sqlite import DB_NAME, _dedup


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
