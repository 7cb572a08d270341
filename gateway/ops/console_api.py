"""The console's data on the admin API: each source's recent calls and their live stream (the
Source Debugger), each destination's delivery over a time range (Event Delivery), each
source's pipeline from the books (Delivery Overview) and the events it sent (Schema).

The console's pages read these, and so can an operator's scripts: there is no second source of
truth. Everything here sits behind the admin API's token (see :mod:`gateway.ops.admin`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from gateway.http.app import error_response
from gateway.ingest.tap import RING_SIZE

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway

#: A comment line on an idle stream this often, so proxies and browsers keep it open.
HEARTBEAT_SECS = 15.0
#: A stream writes at most this often: the rows that arrive meanwhile go in one write, and a
#: subscriber's buffer bounds how many (the rest are dropped and shown as a gap). So three
#: browsers watching a busy source cost ingest a few writes a second each, not one per call.
STREAM_FLUSH_SECS = 0.1
_JSON = "application/json"
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
