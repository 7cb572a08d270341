"""The fast path of the server libraries' calls: ``POST /v1/batch`` and the single calls,
answered straight from ASGI when they are plain (see :mod:`gateway.fastpath`).

Plain means: no ``Origin`` (not a browser: CORS lives in the routes), a known write key, every
message valid, within the source's rate limit. Anything else is declined before any side
effect and goes to the Quart routes in ``_tracking``, which share the steps below and so give
the same answer they always did. The checks run in the same order as there.
"""

from __future__ import annotations

from gateway import (
    Arrival,
    FastRequest,
    IngestHub,
    Invalid,
    Prepared,
    decode_batch,
    decoded_body,
    send_json,
    write_key_of,
)
from gateway.fastpath import Send
from gateway.messages import CALL_TYPES, TYPE_BY_LETTER
from gateway.web import SUCCESS_BODY

from ._common import Refused, Routes
from ._tracking import accept_items, prepare_single

SINGLE_RULE = "/v1/<call>"
BATCH_PATHS = frozenset({"/v1/batch", "/v1/import", "/v1/b"})
SINGLE_PATHS = {f"/v1/{name}": name for name in CALL_TYPES} | {
    f"/v1/{letter}": name for letter, name in TYPE_BY_LETTER.items()
}
#: The raw body cap of the Quart app (gateway.web.create_app): a gzip body may be a little
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
        if "origin" in headers:
            return False
        hub = self._hub
        try:
            data = decoded_body(body, headers.get("content-encoding"), hub.server.max_request_bytes)
            arrival = Arrival.now(hub.client_ip(request.client, headers.get("x-forwarded-for")))
            header_key = write_key_of(headers.get("authorization"))
            call_type = SINGLE_PATHS.get(request.path)
            if call_type is not None:
                prepared = prepare_single(
                    self._routes, data, call_type, header_key, arrival, self._routes.authenticate, declining=True
                )
            else:
                prepared = self._prepare_batch(data, header_key, arrival)
        except (Invalid, Refused):
            return False
        if prepared is None:
            return False
        await hub.store(prepared)
        await send_json(send, 200, SUCCESS_BODY)
        return True

    def _prepare_batch(self, data: bytes, header_key: str | None, arrival: Arrival) -> Prepared | None:
        body = decode_batch(data)
        request_key = header_key or (body.writeKey if isinstance(body.writeKey, str) else None)
        request_source = self._routes.authenticate(request_key) if request_key else None
        if request_key and request_source is None:
            return None
        prepared, _ = accept_items(
            self._routes, body, request_source, arrival, self._routes.authenticate, declining=True
        )
        return prepared
