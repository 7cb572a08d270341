"""CORS for browsers, for every source type that browsers post to (the tracking API,
RudderStack's SDK): which origins a source accepts, and the headers every answer carries.

Browsers preflight every analytics.js POST (it sends ``Authorization``), re-preflight retries
with ``x-retry-count``, and treat an answer without ``Access-Control-Allow-Origin`` as a failure
that they retry: so every answer to an allowed origin carries CORS headers, errors included, and
``Retry-After`` is exposed so a 429 is retried when the server asked (clients.md §4.4).
"""

from __future__ import annotations

from collections.abc import Iterable

from quart import Response

DEFAULT_ALLOW_HEADERS = "authorization, x-retry-count, content-type"
ALLOW_METHODS = "GET, POST, OPTIONS"
MAX_AGE_SECS = "86400"


def origin_allowed(allowed: Iterable[str], origin: str) -> bool:
    """Whether ``origin`` matches one of the ``allowed_origins`` patterns."""
    origin = origin.lower()
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern in ("*", origin):
            return True
        scheme, sep, host = pattern.partition("://*.")
        if sep and origin.startswith(f"{scheme}://") and origin.split("://", 1)[1].endswith(f".{host}"):
            return True
    return False


def add_cors_headers(response: Response, origin: str, *, preflight: bool, requested_headers: str | None) -> None:
    """Headers that let the page at ``origin`` read this answer (and send the next request)."""
    for name, value in cors_headers(origin, preflight=preflight, requested_headers=requested_headers):
        if name == "Vary":
            response.headers.add(name, value)
        else:
            response.headers[name] = value


def cors_headers(origin: str, *, preflight: bool, requested_headers: str | None) -> list[tuple[str, str]]:
    """The headers of :func:`add_cors_headers`, as (name, value) pairs (``Vary`` is added to)."""
    headers = [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "Retry-After, X-RateLimit-Reset"),
        ("Vary", "Origin"),
    ]
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Allow-Headers", requested_headers or DEFAULT_ALLOW_HEADERS),
            ("Access-Control-Max-Age", MAX_AGE_SECS),
        ]
    return headers
