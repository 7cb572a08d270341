"""The fast path of the tracking API: ``POST /v1/batch`` and the single calls, answered
straight from ASGI when they are plain (see :mod:`gateway.http.fastpath`).

Plain means: a known write key whose source accepts the request's ``Origin`` (if it has one:
the answer then carries the same CORS headers as the routes'), every message valid, within the
source's rate limit. Anything else is declined before any side effect and goes to the Quart
routes in ``_tracking``, which share the steps below and so give the same answer they always
did, refusals and preflights included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from gateway import (
    CALL_TYPES,
    Arrival,
    Candidate,
    Checked,
    FastRequest,
    Ingest,
    Invalid,
    RateLimitedError,
    Source,
    cors_headers,
    decoded_body,
    origin_allowed,
    send_json,
    write_key_of,
)

from ._common import Refused, Routes
from ._tracking import TYPE_BY_LETTER

Send = Callable[[dict[str, Any]], Awaitable[None]]
SUCCESS_BODY = b'{"success":true}'
SINGLE_RULE = "/v1/<call>"
BATCH_PATHS = frozenset({"/v1/batch", "/v1/import", "/v1/b"})
SINGLE_PATHS = {f"/v1/{name}": name for name in CALL_TYPES} | {
    f"/v1/{letter}": name for letter, name in TYPE_BY_LETTER.items()
}
#: The raw body cap of the core's Quart app: a gzip body may be a little larger than what it
#: inflates to.
GZIP_SLACK_BYTES = 64 * 1024


METRICS_PATH = "/v1/m"
#: What the routes' preflight answer carries besides CORS (Quart's automatic OPTIONS answer).
PREFLIGHT_HEADERS = [(b"allow", b"POST, OPTIONS"), (b"content-type", b"text/html; charset=utf-8")]


class TrackingFastPath:
    """:class:`gateway.FastPath` for the tracking API: the calls, batches, client telemetry
    (``/v1/m``) and the browsers' preflights of all of them."""

    headers = frozenset(
        {
            b"authorization",
            b"origin",
            b"content-encoding",
            b"x-forwarded-for",
            b"access-control-request-headers",
        }
    )

    def __init__(self, routes: Routes) -> None:
        self._routes = routes
        self._ingest: Ingest = routes.ingest

    def route(self, method: str, path: str) -> str | None:
        if method not in ("POST", "OPTIONS"):
            return None
        if path in BATCH_PATHS or path == METRICS_PATH:
            return path
        return SINGLE_RULE if path in SINGLE_PATHS else None

    def max_body_bytes(self) -> int:
        return self._ingest.limits.max_request_bytes + GZIP_SLACK_BYTES

    async def answer(self, request: FastRequest, body: bytes, send: Send) -> bool:
        if request.method == "OPTIONS":
            await self._preflight(request, send)
            return True
        headers = request.headers
        ingest = self._ingest
        origin = headers.get("origin") or None  # an empty Origin is none, as in the routes
        if request.path == METRICS_PATH:  # analytics.js's telemetry: read, answered, dropped
            try:
                decoded_body(body, headers.get("content-encoding"), ingest.limits.max_request_bytes)
            except Invalid:
                return False
            await send_json(send, 200, SUCCESS_BODY, self.error_headers(request))
            return True
        find_source = self._routes.authenticate if origin is None else partial(self._source_allowing, origin)
        try:
            data = decoded_body(body, headers.get("content-encoding"), ingest.limits.max_request_bytes)
            arrival = ingest.arrival(request.client, headers.get("x-forwarded-for"))
            header_key = write_key_of(headers.get("authorization"))
            call_type = SINGLE_PATHS.get(request.path)
            if call_type is not None:
                checked = self._check_single(data, call_type, header_key, arrival, find_source)
            else:
                checked = ingest.check_batch(data, arrival, write_key=header_key, find_source=find_source, strict=True)
        except (Invalid, Refused, RateLimitedError, _OriginRefused):
            return False
        if checked is None:
            return False
        await ingest.store(checked)
        cors = () if origin is None else _encoded(cors_headers(origin, preflight=False, requested_headers=None))
        await send_json(send, 200, SUCCESS_BODY, cors)
        return True

    def _check_single(
        self,
        data: bytes,
        call_type: str,
        header_key: str | None,
        arrival: Arrival,
        find_source: Callable[[object], Source | None],
    ) -> Checked | None:
        source = None
        if header_key:
            source = find_source(header_key)
            if source is None:
                return None
        return self._ingest.check(
            [Candidate(data, call_type)], arrival, source=source, find_source=find_source, strict=True
        )

    async def _preflight(self, request: FastRequest, send: Send) -> None:
        """As the routes answer a preflight: 200, no body; CORS when some source allows the
        origin (a preflight carries no write key: the POST is still refused for a source that
        does not allow it)."""
        origin = request.headers.get("origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin and any(origin_allowed(s.options.allowed_origins, origin) for s in self._routes.sources()):
            requested = request.headers.get("access-control-request-headers")
            cors = _encoded(cors_headers(origin, preflight=True, requested_headers=requested))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*PREFLIGHT_HEADERS, (b"content-length", b"0"), *cors],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    def error_headers(self, request: FastRequest) -> list[tuple[bytes, bytes]]:
        # The routes' CORS hook asks the request's source, or every source when it has none.
        # answer() raises only after every source it found allowed the origin (it declines
        # otherwise), so asking every source gives the routes' answer either way.
        origin = request.headers.get("origin")
        if origin and any(origin_allowed(s.options.allowed_origins, origin) for s in self._routes.sources()):
            return _encoded(cors_headers(origin, preflight=False, requested_headers=None))
        return []

    def _source_allowing(self, origin: str, write_key: object) -> Source | None:
        """The source of a write key, when it accepts requests from ``origin``."""
        source = self._routes.authenticate(write_key)
        if source is not None and not origin_allowed(source.options.allowed_origins, origin):
            raise _OriginRefused
        return source


class _OriginRefused(Exception):
    """A source that does not accept the request's origin: the routes answer 403."""


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
