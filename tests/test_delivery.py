"""Destination workers on a real log: batching, ordering, cursors, retries, dead letters, filters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from gateway.components import Destination, Filter, Record
from gateway.config import DestinationConfig, LogConfig
from gateway.delivery.worker import DestinationWorker, backoff_delay
from gateway.errors import DeliveryError
from gateway.log import Entry, IngestLog, open_log

FAST = {"type": "test", "retry_initial_secs": 0.01, "retry_max_secs": 0.05, "batch_max_wait_secs": 0.01}


class Recording(Destination):
    """A destination that records batches and can be told to fail."""

    def __init__(self, fail: Callable[[Sequence[Record], int], None] | None = None, delay: float = 0) -> None:
        self.batches: list[list[Record]] = []
        self.calls = 0
        self.fail = fail
        self.delay = delay

    async def send(self, batch: Sequence[Record]) -> None:
        self.calls += 1
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail is not None:
            self.fail(batch, self.calls)
        self.batches.append(list(batch))

    @property
    def ids(self) -> list[str]:
        return [r.message()["messageId"] for batch in self.batches for r in batch]


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[IngestLog]:
    async with open_log(LogConfig(), tmp_path) as ingest_log:
        yield ingest_log


async def append(log: IngestLog, ids: Sequence[str], **fields: Any) -> None:
    import msgspec

    await log.append([Entry("web", i, msgspec.json.encode({"messageId": i, **fields})) for i in ids])


async def run_until(
    log: IngestLog, worker: DestinationWorker, condition: Callable[[], bool], timeout: float = 5
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        with trio.fail_after(timeout):
            while not condition():
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()


async def test_batches_in_order_and_cursor_persisted(log: IngestLog) -> None:
    destination = Recording()
    worker = DestinationWorker("d", DestinationConfig(**FAST, batch_max_messages=4), destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await append(log, [f"m{i}" for i in range(10)])
        with trio.fail_after(5):
            while worker.statistics().cursor < 10:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert destination.ids == [f"m{i}" for i in range(10)]
    assert all(len(b) <= 4 for b in destination.batches)
    assert await log.cursor("d") == 10
    assert worker.statistics().delivered == 10


async def test_max_wait_gathers_a_batch(log: IngestLog) -> None:
    destination = Recording()
    config = DestinationConfig(**{**FAST, "batch_max_wait_secs": 0.3}, batch_max_messages=100)
    worker = DestinationWorker("d", config, destination, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        for i in range(5):
            await append(log, [f"m{i}"])
            await trio.sleep(0.01)
        with trio.fail_after(5):
            while worker.statistics().delivered < 5:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert [len(b) for b in destination.batches] == [5]


async def test_byte_bound_splits_batches(log: IngestLog) -> None:
    destination = Recording()
    config = DestinationConfig(**FAST, batch_max_bytes=250)
    await log.cursor("d")
    await append(log, [f"m{i}" for i in range(6)], pad="x" * 80)
    worker = DestinationWorker("d", config, destination, log)
    await run_until(log, worker, lambda: worker.statistics().delivered == 6)
    assert all(sum(len(r.body) for r in b) <= 250 for b in destination.batches)


async def test_retryable_failures_are_retried_until_delivered(log: IngestLog) -> None:
    def flaky(batch: Sequence[Record], call: int) -> None:
        if call <= 3:
            raise DeliveryError("503 from upstream", retryable=True)

    destination = Recording(flaky)
    await log.cursor("d")
    await append(log, ["a", "b"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await run_until(log, worker, lambda: worker.statistics().delivered == 2)
    assert destination.ids == ["a", "b"]
    assert worker.statistics().retries == 3


async def test_retry_after_is_honoured(log: IngestLog) -> None:
    def rate_limited(batch: Sequence[Record], call: int) -> None:
        if call == 1:
            raise DeliveryError("429", retryable=True, retry_after=0.3)

    destination = Recording(rate_limited)
    await log.cursor("d")
    await append(log, ["a"])
    worker = DestinationWorker("d", DestinationConfig(**{**FAST, "retry_max_secs": 5}), destination, log)
    start = trio.current_time()
    await run_until(log, worker, lambda: worker.statistics().delivered == 1)
    assert trio.current_time() - start >= 0.3


async def test_exceptions_and_timeouts_are_retried(log: IngestLog) -> None:
    def broken(batch: Sequence[Record], call: int) -> None:
        if call == 1:
            raise RuntimeError("plugin bug")

    destination = Recording(broken)
    await log.cursor("d")
    await append(log, ["a"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await run_until(log, worker, lambda: worker.statistics().delivered == 1)

    slow = Recording(delay=1.0)
    worker = DestinationWorker("s", DestinationConfig(**FAST, timeout_secs=0.05, max_attempts=2), slow, log)
    await log.cursor("s")
    await append(log, ["b"])
    await run_until(log, worker, lambda: worker.statistics().dead_lettered == 1)
    assert "timed out" in (worker.statistics().last_error or "")


async def test_permanent_failure_dead_letters_only_the_bad_record(log: IngestLog, tmp_path: Path) -> None:
    def picky(batch: Sequence[Record], call: int) -> None:
        if any(r.message()["messageId"] == "bad" for r in batch):
            raise DeliveryError("HTTP 400: bad field", retryable=False)

    destination = Recording(picky)
    await log.cursor("d")
    await append(log, ["a", "bad", "c"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log)
    await run_until(log, worker, lambda: worker.statistics().cursor == 3)
    assert destination.ids == ["a", "c"]
    [letter] = await log.dead_letters()
    assert (letter.destination, letter.seq, letter.error) == ("d", 2, "HTTP 400: bad field")
    assert b'"bad"' in letter.body


async def test_max_attempts_dead_letters(log: IngestLog, tmp_path: Path) -> None:
    def always(batch: Sequence[Record], call: int) -> None:
        raise DeliveryError("down", retryable=True)

    await log.cursor("d")
    await append(log, ["a", "b"])
    worker = DestinationWorker("d", DestinationConfig(**FAST, max_attempts=3), Recording(always), log)
    await run_until(log, worker, lambda: worker.statistics().cursor == 2)
    letters = await log.dead_letters(destination="d")
    assert [(x.seq, x.attempts) for x in letters] == [(1, 3), (2, 3)]


async def test_cursor_never_passes_an_unfinished_batch(log: IngestLog) -> None:
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
        with trio.fail_after(5):
            while len(destination.batches) < 3:
                await trio.sleep(0.005)
        await trio.sleep(0.2)
        # The stuck batch holds back the cursor; the others hold their slots, so no more than
        # concurrency - 1 batches get delivered-but-unrecorded (what a crash would re-send).
        assert len(destination.batches) == 3
        assert worker.statistics().in_flight_batches == 4
        assert worker.statistics().cursor == 0
        assert await log.cursor("d") == 0
        release.set()
        while worker.statistics().cursor < 8:
            await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert await log.cursor("d") == 8


async def test_destination_filters_drop_and_change(log: IngestLog) -> None:
    class DropOdd(Filter):
        def process(self, message: dict) -> dict | None:
            if int(message["messageId"][1:]) % 2:
                return None
            return {**message, "seen": True}

    destination = Recording()
    await log.cursor("d")
    await append(log, [f"m{i}" for i in range(4)])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log, [("drop_odd", DropOdd())])
    await run_until(log, worker, lambda: worker.statistics().cursor == 4)
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


async def test_a_raising_filter_dead_letters_the_message_and_the_worker_goes_on(log: IngestLog, tmp_path: Path) -> None:
    from gateway.ops.audit import audit

    class Broken(Filter):
        def process(self, message: dict) -> dict | None:
            if message["messageId"] == "boom":
                raise KeyError("properties")
            return message

    destination = Recording()
    await log.cursor("d")
    await append(log, ["a", "boom", "c"])
    worker = DestinationWorker("d", DestinationConfig(**FAST), destination, log, [("strict", Broken())])
    await run_until(log, worker, lambda: worker.statistics().cursor == 3)
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
    from gateway.delivery.worker import integrations_allow

    assert integrations_allow(integrations, "CRM", opt_in=opt_in) is allowed


async def test_integrations_object_filters_before_send_and_is_accounted(log: IngestLog, tmp_path: Path) -> None:
    from gateway.ops.audit import audit

    await log.cursor("crm")
    await append(log, ["a"])
    await append(log, ["b"], integrations={"All": False})
    await append(log, ["c"], integrations={"All": False, "CRM": {"listId": 7}})
    await append(log, ["d"], integrations={"CRM": False, "All": True})
    destination = Recording()
    config = DestinationConfig(**FAST, display_name="CRM")
    worker = DestinationWorker("crm", config, destination, log)
    await run_until(log, worker, lambda: worker.statistics().cursor == 4)
    assert destination.ids == ["a", "c"]
    [books] = audit(await log.books()).destinations
    assert books.filtered == {"filtered_by_integrations_object": 2} and books.delivered == 2


async def test_a_replay_sends_exactly_its_range_and_then_stops(log: IngestLog) -> None:
    from gateway.delivery.worker import Replay

    await append(log, [f"m{i}" for i in range(1, 11)])
    after, upto = await log.seq_range(0)
    assert (after, upto) == (0, 10)
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
