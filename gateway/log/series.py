"""The write side of the per-minute series (:meth:`gateway.log.IngestLog.add_series`), and the
latency histogram they hold.

Workers and the ingest hub count into a :class:`SeriesRecorder` in memory (a dict update, no
await); the daemon flushes it to the log every few seconds and at shutdown, so the charts
survive restarts and several gateways on one log add up. A crash loses at most the counts of
the last few seconds: the series are for charts, the books (``gateway audit``) stay exact.

Latency is a histogram in fixed log-scale bins, four per doubling (each bin 19% wide), counted
as metrics ``latency:<bin>``: bins add up across minutes and gateways, and a percentile read
from them is within a bin's width of the true one, whatever the range.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from gateway.errors import LogUnavailableError
from gateway.log import SERIES_BUCKET_MS, IngestLog, SeriesSample, mentions_user, user_spellings

#: Latency bins per doubling; bin 0 holds everything under 1 ms.
BINS_PER_OCTAVE = 4
#: The last bin holds everything from 2**30 ms (12 days) on.
MAX_LATENCY_BIN = 30 * BINS_PER_OCTAVE + 1
LATENCY_PREFIX = "latency:"


def source_series(source_id: str) -> str:
    """The series of a source (its refusals by code); a destination's series is its id."""
    return f"source:{source_id}"


def latency_bin(ms: float) -> int:
    """The bin of a latency: 0 below 1 ms, then ``b`` for ``[2**((b-1)/4), 2**(b/4))`` ms."""
    if ms < 1:
        return 0
    return min(MAX_LATENCY_BIN, int(math.log2(ms) * BINS_PER_OCTAVE) + 1)


def bin_value_ms(latency_bin: int) -> float:
    """The value a bin stands for: its geometric middle (0.5 ms for bin 0)."""
    if latency_bin <= 0:
        return 0.5
    return float(2 ** ((latency_bin - 0.5) / BINS_PER_OCTAVE))


def percentile_ms(bins: Mapping[int, int], fraction: float) -> float | None:
    """The latency at ``fraction`` (0.95 for p95) of a histogram, or None when it is empty."""
    total = sum(bins.values())
    if total <= 0:
        return None
    rank = math.ceil(total * fraction)
    seen = 0
    for latency_bin in sorted(bins):
        seen += bins[latency_bin]
        if seen >= rank:
            return round(bin_value_ms(latency_bin), 1)
    return round(bin_value_ms(max(bins)), 1)  # pragma: no cover (rank <= total)


def latency_bins(counts: Mapping[str, int]) -> dict[int, int]:
    """The latency histogram held in one minute's (or a sum of minutes') metrics."""
    return {int(metric[len(LATENCY_PREFIX) :]): n for metric, n in counts.items() if metric.startswith(LATENCY_PREFIX)}


class SeriesRecorder:
    """Counts for the series, kept in memory until :meth:`flush` adds them to the log."""

    def __init__(self, log: IngestLog, clock: Callable[[], float] = time.time) -> None:
        self._log = log
        self._clock = clock
        self._counts: Counter[tuple[str, int, str]] = Counter()
        self._samples: dict[tuple[str, str], SeriesSample] = {}
        self._withheld: list[tuple[bytes, ...]] = []  # users being deleted: samples wait

    def now_ms(self) -> int:
        """The time the series are counted in (ms)."""
        return int(self._clock() * 1000)

    def _minute(self) -> int:
        now_ms = self.now_ms()
        return now_ms - now_ms % SERIES_BUCKET_MS

    def count(self, series: str, metric: str, n: int = 1) -> None:
        """Add ``n`` to ``metric`` of ``series`` in the current minute."""
        if n:
            self._counts[(series, self._minute(), metric)] += n

    def latencies(self, series: str, latencies_ms: Iterable[float]) -> None:
        """Count each latency in its bin, in the current minute."""
        minute = self._minute()
        counts = self._counts
        for latency_bin_, n in Counter(map(latency_bin, latencies_ms)).items():  # a key per bin, not per message
            counts[(series, minute, f"{LATENCY_PREFIX}{latency_bin_}")] += n

    def sample(self, series: str, kind: str, body: bytes) -> None:
        """Keep ``body`` as the latest sample of ``kind`` (replacing an older one not flushed yet)."""
        self._samples[(series, kind)] = SeriesSample(series, kind, int(self._clock() * 1000), body)

    @contextmanager
    def withholding(self, user_id: str) -> Iterator[None]:
        """While a deletion request for ``user_id`` runs, keep samples in memory (counts still
        go to the log), and drop those that hold the user's data, before and after: a send
        already under way may still record the user's event as what it sent."""
        spellings = user_spellings(user_id)
        self._forget(spellings)
        self._withheld.append(spellings)
        try:
            yield
        finally:
            self._withheld.remove(spellings)
            self._forget(spellings)

    def _forget(self, spellings: tuple[bytes, ...]) -> None:
        self._samples = {key: x for key, x in self._samples.items() if not mentions_user(x.body, spellings)}

    async def flush(self) -> None:
        """Add what was counted since the last flush to the log. If the log cannot take it
        now, the counts stay here and go with the next flush.

        Raises:
            gateway.errors.LogUnavailableError: nothing was added (it is kept for the next try).
        """
        if not self._counts and not self._samples:
            return
        counts, samples = self._counts, self._samples
        self._counts = Counter()
        if self._withheld:  # a deletion request runs: its user's samples must not reach the log
            samples = {}
        else:
            self._samples = {}
        try:
            await self._log.add_series(counts, list(samples.values()))
        except LogUnavailableError:
            counts.update(self._counts)
            self._counts = counts
            self._samples = {**samples, **self._samples}
            raise
