"""Deletion requests in the log: rows deleted or tombstoned, dead letters, and books that stay
exact (audit) whether the user's messages were below, above or inside a destination's cursor."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
import trio

from gateway.components import Destination, Record
from gateway.config import DestinationConfig, LogConfig
from gateway.delivery.worker import DestinationWorker
from gateway.errors import DeliveryError
from gateway.log import Entry, IngestLog, open_log
from gateway.log import sqlite as sqlite_log
from gateway.ops.audit import DestinationAudit, audit

SECRET = "PLUTONIUM-7731"
FAST = {"type": "test", "retry_initial_secs": 0.01, "retry_max_secs": 0.02, "batch_max_wait_secs": 0.01}


def message(message_id: str, user: str) -> Entry:
    body = {"type": "track", "event": "e", "messageId": message_id, "userId": user}
    if user == "user-42":
        body["properties"] = {"note": SECRET}
    return Entry("web", message_id, msgspec.json.encode(body))


async def append(log: IngestLog, users: Sequence[str], prefix: str = "m") -> None:
    start = log.head() + 1
    await log.append([message(f"{prefix}{start + i}", user) for i, user in enumerate(users)])


def rows(data_dir: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(data_dir / sqlite_log.DB_NAME)
    try:
        return dict(conn.execute("SELECT seq, body FROM messages"))
    finally:
        conn.close()


async def books(log: IngestLog, destination: str, since_ms: int | None = None) -> DestinationAudit:
    report = audit(await log.books(since_ms))
    assert report.balanced, report
    return next(d for d in report.destinations if d.destination == destination)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[IngestLog]:
    async with open_log(LogConfig(), tmp_path) as ingest_log:
        yield ingest_log


async def test_deleted_rows_below_and_above_cursors(log: IngestLog, tmp_path: Path) -> None:
    await log.cursor("fast")
    await log.cursor("slow")
    users = ["a", "user-42", "b", "c", "user-42", "d", "e", "user-42", "f", "g"]  # seqs 1..10
    await append(log, users)
    await log.set_cursor("fast", 10, {("web", "delivered"): 10})
    await log.set_cursor("slow", 4, {("web", "delivered"): 4})
    assert (await books(log, "slow")).pending == 6
    assert SECRET.encode() in b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))

    report = await log.delete_user("user-42", ["fast", "slow"])

    assert (report.messages_deleted, report.tombstoned, report.dead_letters_deleted) == (3, 0, 0)
    assert report.pending == {"fast": 0, "slow": 2}
    assert sorted(rows(tmp_path)) == [1, 3, 4, 6, 7, 9, 10]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))
    assert SECRET.encode() not in on_disk
    fast, slow = await books(log, "fast"), await books(log, "slow")
    assert (fast.delivered, fast.filtered, fast.pending) == (10, {}, 0)  # it had them all already
    assert (slow.delivered, slow.filtered, slow.pending) == (4, {"deleted": 2}, 4)
    assert slow.by_source["web"]["filtered:deleted"] == 2
    conn = sqlite3.connect(tmp_path / sqlite_log.DB_NAME)
    assert conn.execute("SELECT user_id, messages_deleted FROM deletion_requests").fetchall() == [("user-42", 3)]
    conn.close()

    # The slow destination catches up over what is left: the books still balance.
    await log.set_cursor("slow", 10, {("web", "delivered"): 4})
    assert ((await books(log, "slow")).delivered, (await books(log, "slow")).pending) == (8, 0)


async def test_the_newest_row_becomes_a_tombstone_and_is_never_sent(log: IngestLog, tmp_path: Path) -> None:
    await log.cursor("d")
    await append(log, ["user-42", "a", "user-42"])  # the newest row is the user's

    report = await log.delete_user("user-42", ["d"])

    assert (report.messages_deleted, report.tombstoned) == (1, 1)
    assert report.pending == {"d": 2}
    assert log.head() == 3
    assert rows(tmp_path)[3] == b'{"messageId":"m3","type":"deleted"}'  # same seq, no personal data
    assert (await books(log, "d")).filtered == {"deleted": 1}
    assert (await log.append([message("m4", "b")])).stored == 1
    assert max(rows(tmp_path)) == 4  # the seq was not reused
    assert (await log.append([message("m3", "user-42")])).duplicates == 1  # the tombstone keeps the key

    destination = Recording()
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await run_until(worker, lambda: worker.statistics().cursor == 4)
    assert destination.ids == ["m2", "m4"]
    d = await books(log, "d")
    assert (d.delivered, d.filtered, d.pending) == (2, {"deleted": 2}, 0)  # one by the deletion, one by the worker


async def test_records_in_flight_are_tombstoned_and_left_out_of_the_next_attempt(
    log: IngestLog, tmp_path: Path
) -> None:
    refusing = [True]

    def fail(batch: Sequence[Record], calls: int) -> None:
        if refusing[0]:
            raise DeliveryError("not now", retryable=True)

    destination = Recording(fail)
    worker = DestinationWorker("d", DestinationConfig(**FAST, batch_max_messages=4), destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await append(log, ["a", "user-42", "user-42", "b"])  # seqs 1-4: one batch, stuck in retries
        with trio.fail_after(5):
            while destination.calls < 2:
                await trio.sleep(0.005)
        await append(log, ["c", "user-42"], prefix="n")  # read while the first batch is stuck
        await trio.sleep(0.1)
        await append(log, ["user-42", "e"], prefix="o")  # never read before the deletion

        report = await log.delete_user("user-42", ["d"])

        await worker.wait_sends_from_before(log.deletions)
        assert not worker.sending_from_before(log.deletions)
        assert (await books(log, "d")).pending > 0
        refusing[0] = False
        with trio.fail_after(5):
            while worker.statistics().cursor < 8:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()

    assert (report.messages_deleted, report.tombstoned) == (1, 3)  # seq 7 was never read
    assert destination.ids == ["m1", "m4", "n5", "o8"]
    assert all(SECRET.encode() not in r.body for batch in destination.batches for r in batch)
    d = await books(log, "d")
    assert (d.delivered, d.filtered, d.pending) == (4, {"deleted": 4}, 0)


async def test_audit_since_stays_exact_across_a_deletion(tmp_path: Path) -> None:
    now = [1_000]
    async with open_log(LogConfig(), tmp_path, clock_ms=lambda: now[0]) as log:
        await audit_since_stays_exact(log, tmp_path, now)


async def audit_since_stays_exact(log: IngestLog, tmp_path: Path, now: list[int]) -> None:
    await log.cursor("d")
    await append(log, ["a", "b", "user-42", "user-42", "c", "d", "user-42", "e", "f", "g"])
    await log.set_cursor("d", 2, {("web", "delivered"): 2})
    now[0] = 2_000
    await log.delete_user("user-42", ["d"])  # runs [3, 4] and [7]
    now[0] = 3_000
    await log.set_cursor("d", 5, {("web", "delivered"): 1})
    now[0] = 4_000
    await log.set_cursor("d", 10, {("web", "delivered"): 4})
    for since, expected in ((1_500, 8), (2_500, 8), (3_500, 5), (4_500, 0)):
        d = await books(log, "d", since_ms=since)
        assert d.expected == expected, since
    assert (await books(log, "d", since_ms=3_500)).filtered == {"deleted": 1}


async def test_a_destination_replaying_the_archive_books_what_was_deleted(log: IngestLog, tmp_path: Path) -> None:
    await log.cursor("live")
    await append(log, ["a", "user-42", "b", "user-42", "c", "d"])
    await log.set_cursor("live", 6, {("web", "delivered"): 6})
    await log.delete_user("user-42", ["live"])

    assert await log.cursor("replay", start_ms=0) == 0
    replay = await books(log, "replay")
    assert (replay.filtered, replay.pending) == ({"deleted": 2}, 4)


async def test_the_users_dead_letters_go_and_do_not_come_back(log: IngestLog, tmp_path: Path) -> None:
    await log.cursor("d")
    await append(log, ["user-42", "a", "user-42", "b"])
    records = await log.read(0, max_records=10, max_bytes=1 << 20, reader="d")
    await log.add_dead_letters("d", records[:2], "refused", 1)  # one of the user's, one not
    await log.set_cursor("d", 2, {("web", "dead_lettered"): 2})

    report = await log.delete_user("user-42", ["d"])

    assert report.dead_letters_deleted == 1
    assert (report.messages_deleted, report.tombstoned) == (1, 1)  # seq 3 was read: it may be in flight
    assert [x.seq for x in await log.dead_letters()] == [2]
    # The worker that held seq 3 gives up on it after the deletion: its body stays out.
    await log.add_dead_letters("d", [records[2]], "refused", 3)
    assert [x.seq for x in await log.dead_letters()] == [2]
    await log.set_cursor("d", 4, {("web", "dead_lettered"): 1, ("web", "delivered"): 1})
    assert (await books(log, "d")).dead_lettered == 3


# -- helpers ----------------------------------------------------------------------------------


class Recording(Destination):
    def __init__(self, fail=None) -> None:  # type: ignore[no-untyped-def]
        self.batches: list[list[Record]] = []
        self.calls = 0
        self.fail = fail

    async def send(self, batch: Sequence[Record]) -> None:
        self.calls += 1
        if self.fail is not None:
            self.fail(batch, self.calls)
        self.batches.append(list(batch))

    @property
    def ids(self) -> list[str]:
        return [r.message()["messageId"] for batch in self.batches for r in batch]


async def run_until(worker: DestinationWorker, condition, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        with trio.fail_after(timeout):
            while not condition():
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
