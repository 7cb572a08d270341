"""A loopback HTTP server for destination tests: a vendor's API, written as one handler that
enforces the vendor's documented schema and limits, served by hypercorn on 127.0.0.1, with
every request recorded and faults (any answer, or none at all) scripted by the test.

Public through :mod:`gateway.testing` (``from gateway.testing import open_loopback_server``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


class ReceivedRequest(NamedTuple):
    """One request the server got. ``headers`` have lowercase names; ``body`` is gunzipped
    when it came with ``Content-Encoding: gzip`` (``raw_size`` is its size on the wire)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw_size: int

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body decoded as ``application/x-www-form-urlencoded``."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class Answer(NamedTuple):
    """What the server answers: a status, a body (bytes, text, or anything JSON-able, sent
    as JSON) and headers."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = {}


#: A vendor API: builds the answer to a request (synchronous: it only validates and records).
Handler = Callable[[ReceivedRequest], Answer]


class LoopbackServer:
    """A :func:`open_loopback_server` server.

    Attributes:
        url: Its base URL, ``http://127.0.0.1:PORT``.
        requests: Every request received, in order (scripted and stalled ones included).
    """

    def __init__(self, handler: Handler) -> None:
        self.url = ""
        self.requests: list[ReceivedRequest] = []
        self._handler = handler
        self._scripted: list[Answer | None] = []
        self._arrived = trio.Event()
        self._released = trio.Event()

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order, instead of the handler (429 with
        ``Retry-After``, 5xx, 401...)."""
        self._scripted.extend(answers)

    def stall(self, count: int = 1) -> None:
        """Leave the next ``count`` requests unanswered until :meth:`release` or the server
        stops (a vendor that hangs: the client's timeout fires)."""
        self._scripted.extend([None] * count)

    def release(self) -> None:
        """Let stalled requests go on (they get no answer; their connection closes)."""
        self._released.set()

    async def wait_requests(self, count: int, *, within_secs: float = 30.0) -> list[ReceivedRequest]:
        """The requests received, once there are at least ``count``.

        Raises:
            AssertionError: fewer arrived within ``within_secs`` (with what did).
        """
        with trio.move_on_after(within_secs):
            while len(self.requests) < count:
                await self._arrived.wait()
            return self.requests
        paths = [f"{r.method} {r.path}" for r in self.requests]
        raise AssertionError(f"{len(self.requests)} of {count} requests within {within_secs}s: {paths}")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" and raw else raw
        request = ReceivedRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True)),
            headers=headers,
            body=body,
            raw_size=len(raw),
        )
        self.requests.append(request)
        self._arrived.set()
        self._arrived = trio.Event()
        if self._scripted:
            answer = self._scripted.pop(0)
            if answer is None:
                await self._released.wait()
                return
        else:
            answer = self._handler(request)
        payload = answer.body
        if not isinstance(payload, bytes):
            payload = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        content_type = "application/json" if not isinstance(answer.body, bytes | str) else "text/plain"
        response_headers = {"content-type": content_type, **{k.lower(): v for k, v in answer.headers.items()}}
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), str(v).encode()) for k, v in response_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def open_loopback_server(handler: Handler) -> AsyncIterator[LoopbackServer]:
    """Serve ``handler`` on 127.0.0.1 (a free port) until the block ends.

    Resource handling:
        The server runs in a nursery of its own and is cancelled at the end; stalled requests
        are dropped then.
    """
    server = LoopbackServer(handler)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:

        async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(server, config, task_status=task_status)  # type: ignore[arg-type]

        binds = await nursery.start(run)
        server.url = binds[0]
        try:
            yield server
        finally:
            server.release()
            nursery.cancel_scope.cancel()
