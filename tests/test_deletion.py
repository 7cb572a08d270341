"""Deletion requests meet delivery, on the in-memory log in virtual time: a destination worker
never sends what a deletion removed, even from batches it had read before (the log's own side of
a deletion is in tests/log_conformance.py, on every engine)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import trio
import trio.testing
from trio.testing import MockClock

from gateway.components import Record
from gateway.config import DestinationConfig
from gateway.delivery.replay import Replay
from gateway.delivery.worker import DestinationWorker
from gateway.errors import DeliveryError
from gateway.log import Entry, IngestLog
from gateway.log.memory import MemoryLog
from gateway.ops.audit import DestinationAudit, audit
from tests.recording import FAST, Recording, deliver_until, log

__all__ = ["log"]  # the fixture

SECRET = "PLUTONIUM-7731"


def message(message_id: str, user: str) -> Entry:
    body = {"type": "track", "event": "e", "messageId": message_id, "userId": user}
    if user == "user-42":
        body["properties"] = {"note": SECRET}
    return Entry("web", message_id, msgspec.json.encode(body))


async def append(log: IngestLog, users: Sequence[str], prefix: str = "m") -> None:
    start = log.head() + 1
    await log.append([message(f"{prefix}{start + i}", user) for i, user in enumerate(users)])


async def books(log: IngestLog, destination: str) -> DestinationAudit:
    report = audit(await log.books())
    assert report.balanced, report
    return next(d for d in report.destinations if d.destination == destination)


async def test_a_tombstone_is_never_sent_and_is_booked_as_deleted(log: MemoryLog, autojump_clock: MockClock) -> None:
    await log.cursor("d")
    await append(log, ["user-42", "a", "user-42"])  # the newest row is the user's: it stays, a tombstone
    report = await log.delete_user("user-42", ["d"])
    assert (report.messages_deleted, report.tombstoned) == (1, 1)
    await append(log, ["b"])

    destination = Recording()
    await deliver_until(DestinationWorker("d", DestinationConfig(**FAST), destination, log), 4)
    assert destination.ids == ["m2", "m4"]
    d = await books(log, "d")
    assert (d.delivered, d.filtered, d.pending) == (2, {"deleted": 2}, 0)  # one by the deletion, one by the worker


async def test_records_in_flight_are_tombstoned_and_left_out_of_the_next_attempt(
    log: MemoryLog, autojump_clock: MockClock
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
        await destination.wait_calls(2)
        await append(log, ["c", "user-42"], prefix="n")  # read while the first batch is stuck...
        await trio.sleep(1)  # (a virtual second: the worker reads them and waits for its slot)
        await append(log, ["user-42", "e"], prefix="o")  # ...these never before the deletion

        report = await log.delete_user("user-42", ["d"])

        await worker.wait_sends_from_before(log.deletions)
        assert not worker.sending_from_before(log.deletions)
        assert (await books(log, "d")).pending > 0
        refusing[0] = False
        await worker.wait_cursor(8)
        nursery.cancel_scope.cancel()

    assert (report.messages_deleted, report.tombstoned) == (1, 3)  # seq 7 was never read
    assert destination.ids == ["m1", "m4", "n5", "o8"]
    assert all(SECRET.encode() not in r.body for batch in destination.batches for r in batch)
    d = await books(log, "d")
    assert (d.delivered, d.filtered, d.pending) == (4, {"deleted": 4}, 0)


async def test_a_replay_whose_rest_was_deleted_still_finishes(log: MemoryLog, autojump_clock: MockClock) -> None:
    await append(log, ["a", "b", "user-42", "user-42", "c"])
    replay = Replay("d", start_seq=0, end_seq=4, created_ms=1)
    await log.set_cursor(replay.name, 0)
    await log.delete_user("user-42", ["d"])  # seqs 3 and 4: the end of the range is gone

    destination = Recording()
    with trio.fail_after(60):
        await DestinationWorker("d", DestinationConfig(**FAST), destination, log, replay=replay).run()
    assert destination.ids == ["m1", "m2"]
    assert (await log.cursors())[replay.name] == (4, 0)
