"""Helpers for delivery tests on the in-memory log under the autojump clock: a destination that
records what it gets and says when, and a worker run that ends once its cursor is saved."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from gateway.components import Destination, Record
from gateway.delivery.worker import DestinationWorker
from gateway.log import Entry, IngestLog
from gateway.log.memory import MemoryLog, open_memory_log

#: A worker that never waits long (in virtual seconds: the tests run under the autojump clock).
FAST = {"type": "test", "retry_initial_secs": 0.01, "retry_max_secs": 0.05, "batch_max_wait_secs": 0.01}


@pytest.fixture
async def log() -> AsyncIterator[MemoryLog]:
    """An in-memory log. The test must ask for ``autojump_clock`` itself (pytest-trio hands
    trio.run only the test's own arguments), so that it runs on virtual time."""
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), "ask for autojump_clock in the test"
    async with open_memory_log() as ingest_log:
        yield ingest_log


class Recording(Destination):
    """A destination that records batches, can be told to fail (``fail(batch, call)`` raises)
    or to take ``delay`` seconds, and lets a test wait for its calls."""

    def __init__(self, fail: Callable[[Sequence[Record], int], None] | None = None, delay: float = 0) -> None:
        self.batches: list[list[Record]] = []
        self.calls = 0
        self.fail = fail
        self.delay = delay
        self._called = trio.Event()

    async def send(self, batch: Sequence[Record]) -> None:
        self.calls += 1
        self._called.set()
        self._called = trio.Event()
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail is not None:
            self.fail(batch, self.calls)
        self.batches.append(list(batch))

    async def wait_calls(self, calls: int) -> None:
        """Return once :meth:`send` was called ``calls`` times."""
        while self.calls < calls:
            await self._called.wait()

    @property
    def ids(self) -> list[str]:
        return [r.message()["messageId"] for batch in self.batches for r in batch]


async def append(log: IngestLog, ids: Sequence[str], **fields: Any) -> None:
    await log.append([Entry("web", i, msgspec.json.encode({"messageId": i, **fields})) for i in ids])


async def deliver_until(worker: DestinationWorker, seq: int, *, within_secs: float = 600) -> None:
    """Run ``worker`` until its saved cursor reaches ``seq`` (everything up to it booked).

    Raises:
        trio.TooSlowError: not within ``within_secs`` of (virtual) time.
    """
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        with trio.fail_after(within_secs):
            await worker.wait_cursor(seq)
        nursery.cancel_scope.cancel()
