"""Destination workers on the in-memory log, in virtual time (the autojump clock): batching,
ordering, cursors, retries and backoff, dead letters and redrive, filters, replays, and a log
that refuses writes for a while."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from gateway.components import Filter, Record
from gateway.config import DestinationConfig
from gateway.delivery.replay import Replay
from gateway.delivery.routing import backoff_delay, integrations_allow
from gateway.delivery.worker import REDRIVE_POLL_SECS, DestinationWorker
from gateway.errors import DeliveryError
from gateway.log.memory import MemoryLog
from gateway.ops.audit import audit
from tests.recording import FAST, Recording, append, deliver_until, log

__all__ = ["log"]  # the fixture


async def test_batches_in_order_and_cursor_persisted(log: MemoryLog, autojump_clock: MockClock) -> None:
    destination = Recording()
    worker = DestinationWorker("d", DestinationConfig(**FAST, batch_max_messages=4), destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await append(log, [f"m{i}" for i in range(10)])
        await worker.wait_cursor(10)
        nursery.cancel_scope.cancel()
    assert destination.ids == [f"m{i}" for i in range(10)]
    assert all(len(b) <= 4 for b in destination.batches)
    assert await log.cursor("d") == 10
    assert worker.statistics().delivered == 10


async def test_max_wait_gathers_a_batch(log: MemoryLog, autojump_clock: MockClock) -> None:
    destination = Recording()
    config = DestinationConfig(**{**FAST, "batch_max_wait_secs": 0.3}, batch_max_messages=100)
    worker = DestinationWorker("d", config, destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        for i in range(5):  # one message every 10 ms: all within the 300 ms wait
            await append(log, [f"m{i}"])
            await trio.sleep(0.01)
        await worker.wait_cursor(5)
        nursery.cancel_scope.cancel()
    assert [len(b) for b in destination.batches] == [5]


async def test_byte_bound_splits_batches(log: MemoryLog, autojump_clock: MockClock) -> None:
    destination = Recording()
    await log.cursor("d")
    await append(log, [f"m{i}" for i in range(6)], pad="x" * 80)
    worker = DestinationWorker("d", DestinationConfig(**FAST, batch_max_bytes=250), destination, log)
    await deliver_until(worker, 6)
    assert all(sum(len(r.body) for r in b) <= 250 for b in destination.batches)
    assert worker.statistics().delivered == 6


async def test_retryable_failures_are_retried_until_delivered(log: MemoryLog, autojump_clock: MockClock) -> None:
    def flaky(batch: Sequence[Record], call: int) -> None:
        if call <= 3:
            raise DeliveryError("503 from upstream", retryable=True)

    destination = Recording(flaky)
    await log.cursor("d")
    await append(log, ["a", "b"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await deliver_until(worker, 2)
    assert destination.ids == ["a", "b"]
    assert worker.statistics().retries == 3


async def test_backoff_grows_to_its_maximum_in_virtual_time(log: MemoryLog, autojump_clock: MockClock) -> None:
    # Five minutes of backoff between attempts: minutes of virtual time, no real time.
    def down(batch: Sequence[Record], call: int) -> None:
        if call <= 4:
            raise DeliveryError("503", retryable=True)

    destination = Recording(down)
    await log.cursor("d")
    await append(log, ["a"])
    config = DestinationConfig(**{**FAST, "retry_initial_secs": 60, "retry_max_secs": 300})
    worker = DestinationWorker("d", config, destination, log)
    started, real_start = trio.current_time(), time.monotonic()
    await deliver_until(worker, 1, within_secs=3600)
    # Ceilings 60, 120, 240, 300; each delay is between half its ceiling and the ceiling.
    assert 360 <= trio.current_time() - started <= 720 + 5
    assert time.monotonic() - real_start < 5
    assert worker.statistics().retries == 4


async def test_retry_after_is_honoured(log: MemoryLog, autojump_clock: MockClock) -> None:
    def rate_limited(batch: Sequence[Record], call: int) -> None:
        if call == 1:
            raise DeliveryError("429", retryable=True, retry_after=30)

    destination = Recording(rate_limited)
    await log.cursor("d")
    await append(log, ["a"])
    worker = DestinationWorker("d", DestinationConfig(**{**FAST, "retry_max_secs": 60}), destination, log)
    start = trio.current_time()
    await deliver_until(worker, 1)
    assert 30 <= trio.current_time() - start < 31


async def test_exceptions_and_timeouts_are_retried(log: MemoryLog, autojump_clock: MockClock) -> None:
    def broken(batch: Sequence[Record], call: int) -> None:
        if call == 1:
            raise RuntimeError("plugin bug")

    destination = Recording(broken)
    await log.cursor("d")
    await append(log, ["a"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await deliver_until(worker, 1)
    assert worker.statistics().delivered == 1

    slow = Recording(delay=1.0)
    worker = DestinationWorker("s", DestinationConfig(**FAST, timeout_secs=0.05, max_attempts=2), slow, log)
    await log.cursor("s")
    await append(log, ["b"])
    await deliver_until(worker, 2)
    assert worker.statistics().dead_lettered == 1
    assert "timed out" in (worker.statistics().last_error or "")


async def test_permanent_failure_dead_letters_only_the_bad_record(log: MemoryLog, autojump_clock: MockClock) -> None:
    def picky(batch: Sequence[Record], call: int) -> None:
        if any(r.message()["messageId"] == "bad" for r in batch):
            raise DeliveryError("HTTP 400: bad field", retryable=False)

    destination = Recording(picky)
    await log.cursor("d")
    await append(log, ["a", "bad", "c"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await deliver_until(worker, 3)
    assert destination.ids == ["a", "c"]
    [letter] = await log.dead_letters()
    assert (letter.destination, letter.seq, letter.error) == ("d", 2, "HTTP 400: bad field")
    assert b'"bad"' in letter.body


async def test_max_attempts_dead_letters(log: MemoryLog, autojump_clock: MockClock) -> None:
    def always(batch: Sequence[Record], call: int) -> None:
        raise DeliveryError("down", retryable=True)

    await log.cursor("d")
    await append(log, ["a", "b"])
    worker = DestinationWorker("d", DestinationConfig(**FAST, max_attempts=3), Recording(always), log)
    await deliver_until(worker, 2)
    letters = await log.dead_letters(destination="d")
    assert [(x.seq, x.attempts) for x in letters] == [(1, 3), (2, 3)]


async def test_a_redriven_dead_letter_is_sent_again_and_booked(log: MemoryLog, autojump_clock: MockClock) -> None:
    refusing = [True]

    def until_fixed(batch: Sequence[Record], call: int) -> None:
        if refusing[0]:
            raise DeliveryError("HTTP 400", retryable=False)

    destination = Recording(until_fixed)
    await log.cursor("d")
    await append(log, ["a"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await worker.wait_cursor(1)
        refusing[0] = False
        assert await log.change_dead_letters("redrive", destination="d") == 1
        await trio.sleep(REDRIVE_POLL_SECS + 0.1)  # the worker's next look at its dead letters
        nursery.cancel_scope.cancel()
    assert destination.ids == ["a"] and await log.dead_letters() == []
    [books] = audit(await log.books()).destinations
    assert (books.dead_lettered, books.redriven, books.unaccounted) == (1, 1, 0)


async def test_cursor_never_passes_an_unfinished_batch(log: MemoryLog, autojump_clock: MockClock) -> None:
    release = trio.Event()

    class FirstBatchStuck(Recording):
        async def send(self, batch: Sequence[Record]) -> None:
            if batch[0].seq == 1:
                await release.wait()
            await super().send(batch)

    destination = FirstBatchStuck()
    await log.cursor("d")
    await append(log, [f"m{i}" for i in range(8)])
    worker = DestinationWorker("d", DestinationConfig(**FAST, batch_max_messages=2, concurrency=4), destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await trio.testing.wait_all_tasks_blocked()
        # The stuck batch holds back the cursor; the others hold their slots, so no more than
        # concurrency - 1 batches get delivered-but-unrecorded (what a crash would re-send).
        assert len(destination.batches) == 3
        assert worker.statistics().in_flight_batches == 4
        assert worker.statistics().cursor == 0
        assert await log.cursor("d") == 0
        release.set()
        await worker.wait_cursor(8)
        nursery.cancel_scope.cancel()
    assert await log.cursor("d") == 8


async def test_a_cursor_the_log_cannot_save_is_saved_once_it_can(log: MemoryLog, autojump_clock: MockClock) -> None:
    destination = Recording()
    await log.cursor("d")
    await append(log, ["a", "b"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    log.fail_commits("disk_full")
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await destination.wait_calls(1)
        await trio.sleep(60)  # retrying the cursor with backoff meanwhile
        assert worker.statistics().cursor == 0 and (await log.cursors())["d"] == (0, 0)
        log.fail_commits(None)
        await worker.wait_cursor(2)
        nursery.cancel_scope.cancel()
    assert destination.calls == 1  # delivered once, recorded later: nothing sent twice
    [books] = audit(await log.books()).destinations
    assert (books.delivered, books.unaccounted) == (2, 0)


async def test_a_dead_letter_the_log_cannot_keep_is_kept_once_it_can(log: MemoryLog, autojump_clock: MockClock) -> None:
    def refuse(batch: Sequence[Record], call: int) -> None:
        raise DeliveryError("HTTP 400", retryable=False)

    await log.cursor("d")
    await append(log, ["a"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), Recording(refuse), log)
    log.fail_commits("disk_full")
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await trio.sleep(30)
        assert await log.dead_letters() == []
        log.fail_commits(None)
        await worker.wait_cursor(1)
        nursery.cancel_scope.cancel()
    [letter] = await log.dead_letters()
    assert (letter.seq, letter.error) == (1, "HTTP 400")


async def test_destination_filters_drop_and_change(log: MemoryLog, autojump_clock: MockClock) -> None:
    class DropOdd(Filter):
        def process(self, message: dict) -> dict | None:
            if int(message["messageId"][1:]) % 2:
                return None
            return {**message, "seen": True}

    destination = Recording()
    await log.cursor("d")
    await append(log, [f"m{i}" for i in range(4)])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log, [("drop_odd", DropOdd())])
    await deliver_until(worker, 4)
    assert destination.ids == ["m0", "m2"]
    assert all(r.message()["seen"] for b in destination.batches for r in b)
    assert worker.statistics().filtered == 2


def test_backoff_grows_with_jitter_and_respects_retry_after() -> None:
    delays = [backoff_delay(n, initial=1, maximum=60, retry_after=None) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1
    assert 4 <= delays[3] <= 8
    assert all(d <= 60 for d in delays)
    assert backoff_delay(1, initial=1, maximum=60, retry_after=30) >= 30
    assert backoff_delay(1, initial=1, maximum=60, retry_after=1000) == 60


async def test_a_raising_filter_dead_letters_the_message_and_the_worker_goes_on(
    log: MemoryLog, autojump_clock: MockClock
) -> None:
    class Broken(Filter):
        def process(self, message: dict) -> dict | None:
            if message["messageId"] == "boom":
                raise KeyError("properties")
            return message

    destination = Recording()
    await log.cursor("d")
    await append(log, ["a", "boom", "c"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log, [("strict", Broken())])
    await deliver_until(worker, 3)
    assert destination.ids == ["a", "c"]
    [books] = audit(await log.books()).destinations
    assert books.dead_lettered == 1 and books.delivered == 2 and books.unaccounted == 0
    [letter] = await log.dead_letters()
    assert (letter.destination, letter.stage, letter.error) == ("d", "filter", "strict: KeyError: 'properties'")
    assert msgspec.json.decode(letter.body)["messageId"] == "boom"


@pytest.mark.parametrize(
    ("integrations", "opt_in", "allowed"),
    [
        (None, False, True),
        ({}, False, True),
        ({"All": False}, False, False),
        ({"All": False, "CRM": True}, False, True),
        ({"All": False, "CRM": {"listId": "x"}}, False, True),  # an object of options enables
        ({"CRM": False}, False, False),
        ({"crm": False}, False, True),  # names are case-sensitive
        ({"All": True, "CRM": 0}, False, True),  # only a literal false disables
        ({"All": False, "CRM": None}, False, True),
        (None, True, False),  # opt-in: off unless named
        ({"All": True}, True, False),
        ({"CRM": True}, True, True),
        ("junk", False, True),
    ],
)
def test_integrations_object_rules(integrations: Any, opt_in: bool, allowed: bool) -> None:
    assert integrations_allow(integrations, ("CRM",), opt_in=opt_in) is allowed


@pytest.mark.parametrize(
    ("integrations", "allowed"),
    [
        ({"All": False, "Actions CRM": {"option": 1}}, True),  # another of its names enables it
        ({"Actions CRM": False}, False),
        ({"CRM": True, "Actions CRM": False}, True),  # the first of its names present decides
        ({"All": False}, False),
    ],
)
def test_a_destination_answers_to_each_of_its_names(integrations: Any, allowed: bool) -> None:
    assert integrations_allow(integrations, ("CRM", "Actions CRM"), opt_in=False) is allowed


@pytest.mark.parametrize(
    ("integrations", "allowed"),
    [
        ({"All": False}, True),  # All: false never blocks a warehouse or Segment's own collection
        ({"All": False, "Mixpanel": True}, True),
        ({"All": False, "CRM": False}, False),  # its own key still does
        ({"CRM": False}, False),
    ],
)
def test_all_false_is_ignored_where_it_does_not_apply(integrations: Any, allowed: bool) -> None:
    assert integrations_allow(integrations, ("CRM",), opt_in=False, all_false_applies=False) is allowed


async def test_integrations_object_filters_before_send_and_is_accounted(
    log: MemoryLog, autojump_clock: MockClock
) -> None:
    await log.cursor("crm")
    await append(log, ["a"])
    await append(log, ["b"], integrations={"All": False})
    await append(log, ["c"], integrations={"All": False, "CRM": {"listId": 7}})
    await append(log, ["d"], integrations={"CRM": False, "All": True})
    destination = Recording()
    worker = DestinationWorker("crm", DestinationConfig(**FAST, display_name="CRM"), destination, log)
    await deliver_until(worker, 4)
    assert destination.ids == ["a", "c"]
    [books] = audit(await log.books()).destinations
    assert books.filtered == {"filtered_by_integrations_object": 2} and books.delivered == 2


async def test_a_replay_sends_exactly_its_range_and_then_stops(log: MemoryLog, autojump_clock: MockClock) -> None:
    await append(log, [f"m{i}" for i in range(1, 11)])
    assert await log.seq_range(0) == (0, 10)
    replay = Replay("d", start_seq=2, end_seq=7, created_ms=1)
    await log.set_cursor(replay.name, replay.start_seq)
    destination = Recording()
    worker = DestinationWorker("d", DestinationConfig(**FAST, batch_max_messages=2), destination, log, replay=replay)
    with trio.fail_after(5):
        await worker.run()  # returns by itself once the range is sent
    assert destination.ids == ["m3", "m4", "m5", "m6", "m7"]
    assert worker.statistics().cursor == 7
    assert Replay.parse(replay.name, 2) == replay
    await log.forget_cursor(replay.name)
    assert replay.name not in await log.cursors()


async def test_a_replay_of_a_time_range_resumes_from_its_cursor_after_a_restart(
    log: MemoryLog, autojump_clock: MockClock
) -> None:
    # Three batches an hour apart (in virtual time); the replay of the middle hour is stopped
    # half-way (a restart), and a worker started on its persisted cursor finishes it.
    for hour in range(3):
        await append(log, [f"h{hour}-{i}" for i in range(4)])
        await trio.sleep(3600)
    first = (await log.read(0, max_records=1, max_bytes=1 << 20))[0].received_at
    after, upto = await log.seq_range(first + 3_600_000, first + 7_200_000)
    assert (after, upto) == (4, 8)
    replay = Replay("d", start_seq=after, end_seq=upto, created_ms=first)
    await log.set_cursor(replay.name, after)
    stuck = trio.Event()

    class StopsAtTheSecondBatch(Recording):
        async def send(self, batch: Sequence[Record]) -> None:
            if len(self.batches) == 1:
                await stuck.wait()
            await super().send(batch)

    config = DestinationConfig(**FAST, batch_max_messages=2)
    before = StopsAtTheSecondBatch()
    async with trio.open_nursery() as nursery:
        await nursery.start(DestinationWorker("d", config, before, log, replay=replay).run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the "restart"
    assert before.ids == ["h1-0", "h1-1"] and (await log.cursors())[replay.name] == (6, 4)
    after_restart = Recording()
    with trio.fail_after(5):
        await DestinationWorker("d", config, after_restart, log, replay=replay).run()
    assert after_restart.ids == ["h1-2", "h1-3"]
