"""The SQLite log's dedup slices under the events that race their flush: deletion requests
between the steps of a flush. (The promises every engine keeps are in tests/log_conformance.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from gateway.config import LogConfig
from gateway.log import Entry, open_log
from gateway.log.sqlite import _dedup


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
