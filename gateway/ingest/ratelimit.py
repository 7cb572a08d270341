"""Per-source rate limits: a token bucket of events per source; a request past it is refused
whole (429 with ``Retry-After``), whatever source type it came through."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from gateway.components import RateLimit


class TokenBucket:
    """``rate`` events per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def wait(self, events: int) -> int | None:
        """None when ``events`` tokens are there to take, else the seconds to wait (at least 1)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        needed = self._needed(events)
        if self._tokens >= needed:
            return None
        return max(1, math.ceil((needed - self._tokens) / self.rate))

    def take(self, events: int) -> None:
        """Take ``events`` tokens, once :meth:`wait` said they may go. A batch larger than the
        burst passes on a full bucket and leaves it in debt, so the next requests wait for it:
        batching must not beat the rate (2,500-event batches passed 1,100 events/s against a
        limit of 5 when a batch took no more than the burst)."""
        self._tokens -= events

    def _needed(self, events: int) -> int:
        return min(events, self.burst)  # a batch larger than the burst passes on a full bucket


class RateLimits:
    """One bucket per source, rebuilt when the source's limits change."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, wanted: Sequence[tuple[str, RateLimit | None, int]]) -> tuple[int, str] | None:
        """Take ``events`` tokens from each ``(source_id, limit, events)``'s bucket, all or none:
        None when taken (or unlimited), else ``(seconds to wait, the first source refused)``:
        the wait is the longest of the refusing sources', when the client may expect all of
        them to pass."""
        takes = []
        refusal: tuple[int, str] | None = None
        for source_id, limit, events in wanted:
            if limit is None:
                continue
            bucket = self._bucket(source_id, limit)
            wait = bucket.wait(events)
            if wait is not None:
                refusal = (max(wait, refusal[0]), refusal[1]) if refusal else (wait, source_id)
            takes.append((bucket, events))
        if refusal is not None:
            return refusal
        for bucket, events in takes:
            bucket.take(events)
        return None

    def _bucket(self, source_id: str, limit: RateLimit) -> TokenBucket:
        bucket = self._buckets.get(source_id)
        if bucket is None or bucket.rate != limit.events_per_sec or bucket.burst != limit.burst:
            bucket = self._buckets[source_id] = TokenBucket(limit.events_per_sec, limit.burst)
        return bucket
