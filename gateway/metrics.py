"""Prometheus metrics: one registry per gateway, fed by the hub, the workers and the log.

Labels stay bounded: paths are route templates, reasons and codes come from fixed sets or from
config ids, never from event data.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from gateway.components import Filter
    from gateway.log import BacklogInfo

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests", "HTTP requests by route and status", ["path", "status"], registry=r
        )
        self.accepted = Counter("gateway_messages_accepted", "Messages stored in the log", ["source"], registry=r)
        self.deduplicated = Counter(
            "gateway_messages_deduplicated",
            "Messages acknowledged but not stored again (same messageId)",
            ["source"],
            registry=r,
        )
        self.rejected = Counter(
            "gateway_messages_rejected", "Messages refused at ingest, by code", ["code"], registry=r
        )
        self.filtered = Counter(
            "gateway_messages_filtered",
            "Messages that did not go on, by stage (source or destination), its id, and reason",
            ["stage", "target", "reason"],
            registry=r,
        )
        self.forwarded = Counter(
            "gateway_messages_forwarded",
            "Messages a source filter stored into another source (blocked events, violation reports)",
            ["source", "to_source"],
            registry=r,
        )
        self.fields_blocked = Counter(
            "gateway_messages_red_fields_blocked",
            "Messages that had Red fields removed before storage",
            ["source"],
            registry=r,
        )
        self.console_tap_dropped = Counter(
            "gateway_console_tap_dropped",
            "Calls a console subscriber (Source Debugger stream) missed because it read too slowly",
            registry=r,
        )
        self.delivered = Counter(
            "gateway_destination_delivered", "Messages a destination took", ["destination"], registry=r
        )
        self.dead_lettered = Counter(
            "gateway_destination_dead_lettered", "Messages a destination refused for good", ["destination"], registry=r
        )
        self.retries = Counter(
            "gateway_destination_retries", "Failed sends that will be retried", ["destination"], registry=r
        )
        self.delivery_latency = BatchHistogram(
            "gateway_delivery_latency_seconds",
            "From receivedAt to the destination's acknowledgement",
            "destination",
            LATENCY_BUCKETS,
        )
        r.register(self.delivery_latency)
        self.commit_latency = Histogram(
            "gateway_log_commit_seconds",
            "Duration of one group commit (including fsync)",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.reloads = Counter("gateway_config_reloads", "Config reloads by result", ["result"], registry=r)
        # Connections, by listener (api: http, admin); see gateway.http.server.
        self.connections_open = Gauge("gateway_connections_open", "Client connections open", ["api"], registry=r)
        self.connections_refused = Counter(
            "gateway_connections_refused",
            "Connections answered 503 and closed because server.max_connections were open",
            ["api"],
            registry=r,
        )
        self.connections_timed_out = Counter(
            "gateway_connections_timed_out",
            "Connections closed because a client was too slow, by phase (head, body, idle, send)",
            ["api", "phase"],
            registry=r,
        )
        self.connection_errors = Counter(
            "gateway_connection_errors",
            "Connections ended by an error in the HTTP server's own handling, by exception type",
            ["api", "kind"],
            registry=r,
        )
        self._request_children: dict[tuple[str, int], Any] = {}

    def count_request(self, path: str, status: int) -> None:
        """Count one HTTP request; the labelled child is looked up once per (route, status)."""
        child = self._request_children.get((path, status))
        if child is None:
            child = self._request_children[(path, status)] = self.requests.labels(path, str(status))
        child.inc()

    def watch_backlog(self, backlog: Callable[[], list[BacklogInfo]]) -> None:
        """Export per-destination backlog gauges, computed when scraped."""
        self.registry.register(_BacklogCollector(backlog))

    def watch_filters(self, filters: Callable[[], Mapping[str, Filter]]) -> None:
        """Export each filter's own counters (``Filter.statistics``) as ``gateway_filter_events_total``."""
        self.registry.register(_FilterCollector(filters))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BacklogCollector(Collector):
    def __init__(self, backlog: Callable[[], list[BacklogInfo]]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        messages = GaugeMetricFamily(
            "gateway_destination_backlog_messages", "Messages waiting for a destination", labels=["destination"]
        )
        size = GaugeMetricFamily(
            "gateway_destination_backlog_bytes",
            "Bytes waiting for a destination (estimated from a sample)",
            labels=["destination"],
        )
        age = GaugeMetricFamily(
            "gateway_destination_backlog_age_seconds",
            "Age of the oldest message waiting for a destination",
            labels=["destination"],
        )
        now = time.time()
        for info in self._backlog():
            messages.add_metric([info.destination], info.messages)
            size.add_metric([info.destination], info.bytes_estimate)
            age.add_metric([info.destination], max(0.0, now - info.oldest_received_at) if info.messages else 0.0)
        yield from (messages, size, age)


class _FilterCollector(Collector):
    def __init__(self, filters: Callable[[], Mapping[str, Filter]]) -> None:
        self._filters = filters

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "gateway_filter_events",
            "A filter's own counters since it was built (a reload that rebuilds it starts them again)",
            labels=["filter", "counter"],
        )
        for filter_id, message_filter in sorted(self._filters().items()):
            try:
                counters = sorted(message_filter.statistics().items())
            except Exception:  # a plugin's bug must not take /metrics down
                continue
            for name, value in counters:
                family.add_metric([filter_id, name], value)
        yield family


class BatchHistogram(Collector):
    """A histogram with one label that takes a whole batch of observations in one call.

    Delivery observes one latency per message; prometheus_client's ``observe`` takes a lock
    per call (about 1 µs, per delivered event, on the event loop). This one is updated only
    from the event loop's thread, so plain counters and a binary search do (about 0.15 µs).
    """

    def __init__(self, name: str, documentation: str, label: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = list(buckets)
        self._bound_texts = [floatToGoString(b) for b in (*buckets, float("inf"))]  # type: ignore[no-untyped-call]
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # label -> (bucket counts, [sum])

    def observe_many(self, label: str, values: Iterable[float]) -> None:
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = ([0] * (len(self._bounds) + 1), [0.0])
        counts, total = series
        bounds = self._bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total[0] += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for label, (counts, total) in sorted(self._series.items()):
            cumulative, running = [], 0
            for bound, count in zip(self._bound_texts, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([label], cumulative, total[0])
        yield family
