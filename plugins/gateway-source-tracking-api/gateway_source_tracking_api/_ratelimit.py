"""Per-source rate limits: a token bucket of events, answered with 429 and ``Retry-After``."""

from __future__ import annotations

import math
import time


class TokenBucket:
    """``rate`` events per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self, events: int) -> int | None:
        """Take ``events`` tokens; None when allowed, else the seconds to wait (at least 1)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        needed = min(events, self.burst)  # a batch larger than the burst passes on a full bucket
        if self._tokens >= needed:
            self._tokens -= needed
            return None
        return max(1, math.ceil((needed - self._tokens) / self.rate))


class RateLimits:
    """One bucket per source, rebuilt when the source's limits change."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, source_id: str, rate: float | None, burst: int | None, events: int) -> int | None:
        if rate is None:
            return None
        burst = burst or max(100, math.ceil(rate))
        bucket = self._buckets.get(source_id)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self._buckets[source_id] = TokenBucket(rate, burst)
        return bucket.take(events)
