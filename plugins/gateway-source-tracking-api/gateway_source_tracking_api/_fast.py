"""The fast path of the tracking API: ``POST /v1/batch`` and the single calls, answered
straight from ASGI when they are plain (see :mod:`gateway.http.fastpath`).

Plain means: a known write key whose source accepts the request's ``Origin`` (if it has one:
the answer then carries the same CORS headers as the routes'), every message valid, within the
source's rate limit. Anything else is declined before any side effect and goes to the Quart
routes in ``_tracking``, which share the steps below and so give the same answer they always
did, refusals and preflights included.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gateway import (
    Arrival,
    FastRequest,
    IngestHub,
    Invalid,
    Prepared,
    Source,
    decode_batch,
    decoded_body,
    send_json,
    write_key_of,
)
from gateway.http.app import SUCCESS_BODY
from gateway.http.fastpath import Send
from gateway.messages import CALL_TYPES, TYPE_BY_LETTER

from ._common import Refused, Routes
from ._cors import cors_headers, origin_allowed
from ._tracking import accept_items, prepare_single

SINGLE_RULE = "/v1/<call>"
BATCH_PATHS = frozenset({"/v1/batch", "/v1/import", "/v1/b"})
SINGLE_PATHS = {f"/v1/{name}": name for name in CALL_TYPES} | {
    f"/v1/{letter}": name for letter, name in TYPE_BY_LETTER.items()
}
#: The raw body cap of the Quart app (gateway.http.app.create_app): a gzip body may be a little
#: larger than what it inflates to.
GZIP_SLACK_BYTES = 64 * 1024


class TrackingFastPath:
    """:class:`gateway.FastPath` for the tracking API."""

    headers = frozenset({b"authorization", b"origin", b"content-encoding", b"x-forwarded-for"})

    def __init__(self, routes: Routes) -> None:
        self._routes = routes
        self._hub: IngestHub = routes.hub

    def route(self, method: str, path: str) -> str | None:
        if method != "POST":
            return None
        if path in BATCH_PATHS:
            return path
        return SINGLE_RULE if path in SINGLE_PATHS else None

    def max_body_bytes(self) -> int:
        return self._hub.server.max_request_bytes + GZIP_SLACK_BYTES

    async def answer(self, request: FastRequest, body: bytes, send: Send) -> bool:
        headers = request.headers
        hub = self._hub
        origin = headers.get("origin") or None  # an empty Origin is none, as in the routes
        find_source = self._routes.authenticate if origin is None else partial(self._source_allowing, origin)
        try:
            data = decoded_body(body, headers.get("content-encoding"), hub.server.max_request_bytes)
            arrival = Arrival.now(hub.client_ip(request.client, headers.get("x-forwarded-for")))
            header_key = write_key_of(headers.get("authorization"))
            call_type = SINGLE_PATHS.get(request.path)
            if call_type is not None:
                prepared = prepare_single(
                    self._routes, data, call_type, header_key, arrival, find_source, declining=True
                )
            else:
                prepared = self._prepare_batch(data, header_key, arrival, find_source)
        except (Invalid, Refused, _OriginRefused):
            return False
        if prepared is None:
            return False
        await hub.store(prepared)
        cors = () if origin is None else _encoded(cors_headers(origin, preflight=False, requested_headers=None))
        await send_json(send, 200, SUCCESS_BODY, cors)
        return True

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

    def _prepare_batch(
        self, data: bytes, header_key: str | None, arrival: Arrival, find_source: Callable[[object], Source | None]
    ) -> Prepared | None:
        body = decode_batch(data)
        if not body.batch:
            return None  # no source to ask about an Origin: the routes answer it
        request_key = header_key or (body.writeKey if isinstance(body.writeKey, str) else None)
        request_source = find_source(request_key) if request_key else None
        if request_key and request_source is None:
            return None
        prepared, _ = accept_items(self._routes, body, request_source, arrival, find_source, declining=True)
        return prepared


class _OriginRefused(Exception):
    """A source that does not accept the request's origin: the routes answer 403."""


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
