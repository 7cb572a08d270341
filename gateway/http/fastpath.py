"""ASGI fast paths: a source's hottest requests answered without the web framework.

Quart (with quart-trio's per-request nursery) costs 300-450 us of CPU per request on the
2-core bench VM: measured with bench/ingest.py, a durable ``/v1/track`` ack took 1,040 us of
CPU through the Quart routes and 580 us through the fast path, a ``/v1/batch`` of 100 events
24 and 21 us per event. A source type may name a :class:`FastPath` for the requests
that are both frequent and plain, such as a server library's batch. The middleware
(:func:`mount_fast_paths`) reads the body of a request a fast path claims and offers it; the
fast path either answers it or declines, before any side effect, and the request then goes to
the Quart routes with its body replayed. So errors, CORS and partial rejections keep one
implementation, in the routes, and a fast path holds only the happy path.

This module is the contract a plugin implements; :mod:`gateway.http.app` mounts it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec

Send = Callable[[dict[str, Any]], Awaitable[None]]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastRequest(msgspec.Struct, frozen=True):
    """What a fast path may know of a request: its path, peer, the headers it asked for, and
    its method."""

    path: str
    client: str | None
    headers: dict[str, str]
    method: str = "POST"


class FastPath(Protocol):
    """A source type's fast path (``SourceType.fast_path``)."""

    #: Lower-case names of the headers :meth:`answer` reads (the first value of each is kept).
    headers: frozenset[bytes]

    def route(self, method: str, path: str) -> str | None:
        """The route this request would match in the Quart app (its metrics label) when the
        fast path may answer it, else None."""

    def max_body_bytes(self) -> int:
        """The largest raw body worth reading here; a larger one goes to the Quart routes."""

    def error_headers(self, request: FastRequest) -> Sequence[tuple[bytes, bytes]]:
        """Headers for an answer the middleware gives in the fast path's place (a 503 when
        :meth:`answer` raises), such as the CORS headers its routes would add."""

    async def answer(self, request: FastRequest, body: bytes, send: Send) -> bool:
        """Answer the request and return True; or return False, before any side effect
        (nothing sent, stored, counted or rate-limited), to hand it to the Quart routes.

        Raises:
            LogUnavailableError: nothing was stored; the middleware answers 503.
        """


async def send_json(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON answer over ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
