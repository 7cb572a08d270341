"""The console's data on the admin API: each source's recent calls and their live stream (the
Source Debugger), each destination's delivery over a time range (Event Delivery), each
source's pipeline from the books (Delivery Overview) and the events it sent (Schema).

The console's pages read these, and so can an operator's scripts: there is no second source of
truth. Everything here sits behind the admin API's token (see :mod:`gateway.ops.admin`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from gateway.delivery.replay import REPLAY_PREFIX
from gateway.errors import LogUnavailableError
from gateway.http.app import error_response, json_response
from gateway.ingest.tap import RING_SIZE
from gateway.log import SERIES_BUCKET_MS
from gateway.log.series import latency_bins, percentile_ms, source_series

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway

#: A comment line on an idle stream this often, so proxies and browsers keep it open.
HEARTBEAT_SECS = 15.0
#: A stream writes at most this often: the rows that arrive meanwhile go in one write, and a
#: subscriber's buffer bounds how many (the rest are dropped and shown as a gap): at most 500
#: calls a second per browser, more than one can show. So three browsers watching a busy source
#: cost ingest five writes a second each, not one per call.
STREAM_FLUSH_SECS = 0.2
#: Streams open at once, over every source: each holds a bounded buffer (the tap's
#: SUBSCRIBER_BUFFER rows and one write), so this bounds what they all hold; past it, 429.
MAX_STREAMS = 32
_JSON = "application/json"
#: The ranges a chart may show: their length and the width of their buckets (ms).
RANGES = {
    "10m": (10 * 60_000, SERIES_BUCKET_MS),
    "1h": (3_600_000, SERIES_BUCKET_MS),
    "24h": (24 * 3_600_000, 10 * SERIES_BUCKET_MS),
    "7d": (7 * 24 * 3_600_000, 60 * SERIES_BUCKET_MS),
}
_encode = msgspec.json.encode


def add_console_routes(app: QuartTrio, gateway: Gateway) -> None:
    """Add the console's data routes to the admin ``app``."""
    tap = gateway.hub.tap

    def unknown_source(sid: str) -> Response | None:
        if sid in gateway.config.sources:
            return None
        return error_response(404, "no_such_source", f"no source {sid!r} in the config")

    @app.get("/sources/<sid>/events")
    async def source_events(sid: str) -> Response:
        """The source's last calls (at most 500, newest first), kept in memory."""
        if (missing := unknown_source(sid)) is not None:
            return missing
        limit = _int_arg("limit", RING_SIZE)
        if limit is None or limit < 0:
            return error_response(400, "bad_request", f"limit must be a whole number from 0 to {RING_SIZE}")
        rows = tap.recent(sid, min(limit, RING_SIZE))
        body = b"".join(
            (
                b'{"source":',
                _encode(sid),
                b',"events":[',
                b",".join(tap.json(row) for row in rows),
                b'],"dropped":',
                str(tap.seen(sid) - len(rows)).encode(),
                b"}",
            )
        )
        return Response(body, content_type=_JSON)

    @app.get("/sources/<sid>/stream")
    async def source_stream(sid: str) -> Response:
        """Server-sent events: each call as ``event: call``, ``event: gap`` after rows a slow
        reader missed, a comment every 15 s. ``Last-Event-ID`` (or ``?after=ID``) first sends
        the kept calls after that one, so a reconnecting browser misses nothing still kept."""
        if (missing := unknown_source(sid)) is not None:
            return missing
        if tap.subscribers() >= MAX_STREAMS:
            refused = error_response(429, "too_many_streams", f"{MAX_STREAMS} streams are open: close one")
            refused.headers["Retry-After"] = "5"
            return refused
        after = _int_arg("after", None) if "after" in request.args else None
        last_id = request.headers.get("Last-Event-ID", "")
        if after is None and last_id.isdigit():
            after = int(last_id)

        async def events() -> AsyncIterator[bytes]:
            with tap.subscribe(sid) as subscriber:
                first = [b"retry: 2000\n\n"]
                if after is not None:
                    backlog = [row for row in tap.recent(sid) if row[0] > after]
                    backlog.reverse()
                    first += [_call_event(tap.json(row), row[0]) for row in backlog]
                yield b"".join(first)
                while not subscriber.closed:
                    with trio.move_on_after(HEARTBEAT_SECS):
                        await subscriber.wait()
                    rows, dropped = subscriber.take()
                    if not rows and not dropped:
                        if not subscriber.closed:
                            yield b": heartbeat\n\n"
                        continue
                    chunks = [_call_event(tap.json(row), row[0]) for row in rows]
                    if dropped:
                        chunks.append(b'event: gap\ndata: {"dropped":%d}\n\n' % dropped)
                    yield b"".join(chunks)
                    await trio.sleep(STREAM_FLUSH_SECS)

        response = Response(events(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the rows back
        response.timeout = None  # Quart's RESPONSE_TIMEOUT would end it
        return response

    async def counted_so_far() -> None:
        """Add what this gateway counted in the last seconds to the log's series; if the log
        cannot take it now, it is kept for the next flush and the answer comes from what the
        log holds."""
        with suppress(LogUnavailableError):
            await gateway.series.flush()

    @app.get("/destinations/<did>/delivery")
    async def destination_delivery(did: str) -> Response:
        """Event Delivery over a range: delivered, dead-lettered, filtered (by reason), retries,
        p95 latency, a series of buckets, and the errors by kind with their latest sample."""
        if did not in gateway.config.destinations and did not in gateway.destinations:
            return error_response(404, "no_such_destination", f"no destination {did!r}")
        name, (length_ms, bucket_ms) = _range()
        await counted_so_far()
        start, end = _window(gateway.series.now_ms(), length_ms, bucket_ms)
        minutes = await gateway.log.read_series(did, start, end)
        samples = {sample.kind: sample for sample in await gateway.log.series_samples(did)}
        return json_response(
            {
                "destination": did,
                "range": name,
                "bucket_secs": bucket_ms // 1000,
                **delivery_report(minutes, samples, start, end, bucket_ms),
            }
        )

    @app.get("/sources/<sid>/overview")
    async def source_overview(sid: str) -> Response:
        """Delivery Overview: the source's pipeline over a range, from the books the audit
        keeps (received, rejected by code, filtered by reason, stored, then per destination
        filtered, failed, delivered, pending)."""
        if (missing := unknown_source(sid)) is not None:
            return missing
        name, (length_ms, _) = _range()
        await counted_so_far()
        now_ms = gateway.series.now_ms()
        since_ms = now_ms - length_ms
        books = await gateway.log.books(since_ms)
        rejected_minutes = await gateway.log.read_series(
            source_series(sid), since_ms - since_ms % SERIES_BUCKET_MS, now_ms + 1
        )
        return json_response({"source": sid, "range": name, **overview(sid, books, rejected_minutes, since_ms)})

    @app.get("/sources/<sid>/schema")
    async def source_schema(sid: str) -> Response:
        """Schema: the events the source sent, with counts, last seen, properties, and what its
        tracking plan (or schema filter) does with each."""
        if (missing := unknown_source(sid)) is not None:
            return missing
        source = gateway.hub.directory.by_id.get(sid)
        inventoried = source is not None and source.inventory
        events = gateway.hub.event_schema.events(sid) if inventoried else []
        filters = [f for _, f in source.filters] if source is not None else []
        for event in events:
            event["plan"] = _plan_status(filters, event["type"], event["event"])
        return json_response(
            {
                "source": sid,
                "inventory": inventoried,
                "counted_since": gateway.hub.started_at,
                "events": events,
                **({} if inventoried else {"note": "set inventory = true on the source to list its events"}),
            }
        )

    @app.get("/replays")
    async def replays() -> Response:
        """The replays running now, with their progress: seqs ``(start_seq, end_seq]``, the
        cursor reached, and what was delivered, filtered and dead-lettered so far."""
        running = []
        for did, destination in sorted(gateway.destinations.items()):
            for name, worker in sorted(destination.replays.items()):
                replay = worker.replay
                if replay is None:
                    continue
                stats = worker.statistics()
                total = replay.end_seq - replay.start_seq
                done = min(max(stats.cursor - replay.start_seq, 0), total)
                running.append(
                    {
                        "name": name,
                        "destination": did,
                        "created_ms": replay.created_ms,
                        "start_seq": replay.start_seq,
                        "end_seq": replay.end_seq,
                        "cursor": stats.cursor,
                        "progress": round(done / total, 4) if total else 1.0,
                        "delivered": stats.delivered,
                        "filtered": stats.filtered,
                        "dead_lettered": stats.dead_lettered,
                        "retries": stats.retries,
                        "last_error": stats.last_error,
                    }
                )
        return json_response({"replays": running})


def _plan_status(filters: list[Any], call: str | None, event: str | None) -> str | None:
    """What a source's filters do with an event by its name: blocked wins, then omitted, then allowed."""
    said = set()
    for message_filter in filters:
        try:
            said.add(message_filter.plan_status(call or "", event))
        except Exception:  # a plugin's bug: it has no say here
            continue
    for status in ("blocked", "omitted", "allowed"):
        if status in said:
            return status
    return None


def overview(sid: str, books: Any, rejected_minutes: dict[int, dict[str, int]], since_ms: int) -> dict[str, Any]:
    """A source's pipeline from the books (``LogBooks`` read with ``since_ms``) and its refusals."""
    rejected: Counter[str] = Counter()
    for counts in rejected_minutes.values():
        for metric, n in counts.items():
            if metric.startswith("rejected:"):
                rejected[metric.removeprefix("rejected:")] += n
    outcomes = books.sources.get(sid, {})
    filtered: Counter[str] = Counter()
    for outcome, n in outcomes.items():
        if outcome.startswith("filtered:"):
            filtered[outcome.removeprefix("filtered:")] += n
    if outcomes.get("suppressed"):
        filtered["suppressed"] += outcomes["suppressed"]
    stored, duplicates, dead_lettered = (outcomes.get(k, 0) for k in ("stored", "duplicates", "dead_lettered"))
    destinations = {}
    for cursor in books.cursors:
        if cursor.destination.startswith(REPLAY_PREFIX):
            continue
        mine = cursor.outcomes.get(sid, {})
        pending = cursor.pending.get(sid, 0)
        if not mine and not pending:
            continue
        destinations[cursor.destination] = {
            "filtered": {
                outcome.removeprefix("filtered:"): n
                for outcome, n in sorted(mine.items())
                if outcome.startswith("filtered:")
            },
            "failed": mine.get("dead_lettered", 0),
            "delivered": mine.get("delivered", 0),
            "pending": pending,
        }
    hour_ms = 3_600_000
    return {
        "received": stored + duplicates + dead_lettered + sum(filtered.values()) + sum(rejected.values()),
        "rejected": dict(sorted(rejected.items())),
        "filtered": dict(sorted(filtered.items())),
        "dead_lettered": dead_lettered,
        "stored": stored,
        "duplicates": duplicates,
        "destinations": destinations,
        # How each number is cut by the range: the source's books are kept per hour, so they
        # count from the start of the hour that holds the range's start; each destination's
        # from where its cursor was then (to the batch); refusals per minute; pending is now.
        "cut": {
            "since_ms": since_ms,
            "source_books_since_ms": since_ms - since_ms % hour_ms,
            "rejected_since_ms": since_ms - since_ms % SERIES_BUCKET_MS,
            "destinations": "from each cursor's position at since_ms; pending as of now",
            "source_books_exact": since_ms % hour_ms == 0,
        },
    }


def _range() -> tuple[str, tuple[int, int]]:
    """The ``range`` asked for: its name, length and bucket (ms). A ValueError (a 400) otherwise."""
    name = request.args.get("range", "1h")
    if name not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    return name, RANGES[name]


def _window(now_ms: int, length_ms: int, bucket_ms: int) -> tuple[int, int]:
    """``[start, end)`` of a range that ends with the bucket holding now."""
    end = now_ms - now_ms % bucket_ms + bucket_ms
    return end - length_ms, end


def delivery_report(
    minutes: dict[int, dict[str, int]], samples: dict[str, Any], start: int, end: int, bucket_ms: int
) -> dict[str, Any]:
    """Totals, buckets and errors of a destination's series over ``[start, end)``."""
    buckets: list[Counter[str]] = [Counter() for _ in range((end - start) // bucket_ms)]
    totals: Counter[str] = Counter()
    for minute, counts in minutes.items():
        buckets[(minute - start) // bucket_ms].update(counts)
        totals.update(counts)
    series = []
    for index, counts in enumerate(buckets):
        series.append(
            {
                "t": start + index * bucket_ms,
                "delivered": counts["delivered"],
                "dead_lettered": counts["dead_lettered"],
                "filtered": sum(n for metric, n in counts.items() if metric.startswith("filtered:")),
                "retries": counts["retries"],
                "p95_latency_ms": percentile_ms(latency_bins(counts), 0.95),
            }
        )
    errors = []
    for metric, count in totals.items():
        if not metric.startswith("error:") or not count:
            continue
        kind = metric.removeprefix("error:")
        sample = _decoded_sample(samples.get(kind))
        exchange = sample.get("exchange") or {}
        sent = sample.get("sent")
        errors.append(
            {
                "kind": kind,
                "count": count,
                "last_error": sample.get("last_error"),
                "last_at": sample.get("last_at"),
                "retryable": sample.get("retryable"),
                "exchange": None
                if not exchange and sent is None
                else {
                    "sent": _as_json(sent),
                    "request": exchange.get("request"),
                    "response": exchange.get("response"),
                },
            }
        )
    errors.sort(key=lambda error: (error["last_at"] or 0, error["count"]), reverse=True)
    return {
        "totals": {
            "delivered": totals["delivered"],
            "dead_lettered": totals["dead_lettered"],
            "filtered": {
                metric.removeprefix("filtered:"): n
                for metric, n in sorted(totals.items())
                if metric.startswith("filtered:") and n
            },
            "retries": totals["retries"],
            "p95_latency_ms": percentile_ms(latency_bins(totals), 0.95),
        },
        "series": series,
        "errors": errors,
    }


def _decoded_sample(sample: Any) -> dict[str, Any]:
    if sample is None:
        return {}
    try:
        decoded = msgspec.json.decode(sample.body)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _as_json(text: object) -> Any:
    """An event kept as text: the object when it is whole JSON, else the text."""
    if not isinstance(text, str):
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _call_event(data: bytes, row_id: int) -> bytes:
    return b"id: %d\nevent: call\ndata: %s\n\n" % (row_id, data)


def _int_arg(name: str, default: int | None) -> int | None:
    """A whole-number query argument; None when it is not one."""
    value = request.args.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return None
