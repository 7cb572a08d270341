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

from gateway.errors import LogUnavailableError
from gateway.http.app import error_response, json_response
from gateway.ingest.tap import RING_SIZE
from gateway.log import SERIES_BUCKET_MS
from gateway.log.series import latency_bins, percentile_ms

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway

#: A comment line on an idle stream this often, so proxies and browsers keep it open.
HEARTBEAT_SECS = 15.0
#: A stream writes at most this often: the rows that arrive meanwhile go in one write, and a
#: subscriber's buffer bounds how many (the rest are dropped and shown as a gap). So three
#: browsers watching a busy source cost ingest a few writes a second each, not one per call.
STREAM_FLUSH_SECS = 0.1
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

    @app.get("/destinations/<did>/delivery")
    async def destination_delivery(did: str) -> Response:
        """Event Delivery over a range: delivered, dead-lettered, filtered (by reason), retries,
        p95 latency, a series of buckets, and the errors by kind with their latest sample."""
        if did not in gateway.config.destinations and did not in gateway.destinations:
            return error_response(404, "no_such_destination", f"no destination {did!r}")
        chosen = _range()
        if chosen is None:
            return error_response(400, "bad_request", f"range must be one of {', '.join(RANGES)}")
        name, (length_ms, bucket_ms) = chosen
        # What this gateway counted in the last seconds too; if the log cannot take it now, it
        # is kept for the next flush and the answer comes from what the log holds.
        with suppress(LogUnavailableError):
            await gateway.series.flush()
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


def _range() -> tuple[str, tuple[int, int]] | None:
    name = request.args.get("range", "1h")
    return (name, RANGES[name]) if name in RANGES else None


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
