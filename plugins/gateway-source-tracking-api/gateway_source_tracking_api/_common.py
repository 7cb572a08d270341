"""What every route of the tracking-API source shares: authentication, origin and rate checks,
client address, and the CORS hook that runs on every answer."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from quart import Blueprint, Response, g, request

from gateway import IngestHub, Source, basic_auth_user, error_response

from ._config import TYPE_NAME
from ._cors import add_cors_headers, origin_allowed
from ._ratelimit import RateLimits


class Refused(Exception):
    """A request refused as a whole, with the answer to send."""

    def __init__(self, response: Response) -> None:
        self.response = response


def unauthorized() -> Response:
    return error_response(
        401,
        "invalid_write_key",
        "unknown or missing write key: send it as the HTTP Basic user or as writeKey in the body",
    )


#: One set of rate limits per hub, shared by its routes and its fast path.
_limits: weakref.WeakKeyDictionary[IngestHub, RateLimits] = weakref.WeakKeyDictionary()


def _limits_of(hub: IngestHub) -> RateLimits:
    limits = _limits.get(hub)
    if limits is None:
        limits = _limits[hub] = RateLimits()
    return limits


class Routes:
    """Helpers bound to the hub, for the route modules."""

    def __init__(self, hub: IngestHub) -> None:
        self.hub = hub
        self.limits = _limits_of(hub)

    def client_ip(self) -> str | None:
        return self.hub.client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"))

    def header_key(self) -> str | None:
        return basic_auth_user(request)

    def authenticate(self, write_key: object) -> Source | None:
        """The source of a write key (any JSON value: only a string can be one)."""
        return self.hub.authenticate(write_key if isinstance(write_key, str) else None, TYPE_NAME)

    def source_for(self, write_key: object) -> Source | None:
        """The source of a write key; remembered for the CORS hook of this request."""
        source = self.authenticate(write_key)
        if source is not None and g.get("tracking_source") is None:
            g.tracking_source = source
        return source

    def check_origin(self, source: Source) -> None:
        """Refuse (403, nothing stored) a browser request from an origin the source does not allow."""
        origin = request.headers.get("Origin")
        if origin and not origin_allowed(source.options.allowed_origins, origin):
            raise Refused(error_response(403, "origin_not_allowed", f"origin {origin} is not allowed for this source"))

    def check_rate(self, events: Sequence[tuple[Source, int]]) -> None:
        """Refuse with 429 and ``Retry-After`` when any ``(source, events)`` is past its source's
        rate limit; the tokens are taken from every source's bucket or from none."""
        refusal = self.limits.take(
            [(s.id, s.options.rate_limit_events_per_sec, s.options.rate_limit_burst, n) for s, n in events]
        )
        if refusal is not None:
            wait, source_id = refusal
            [rate] = {s.options.rate_limit_events_per_sec for s, _ in events if s.id == source_id}
            response = error_response(429, "rate_limited", f"this source accepts {rate} events/s")
            response.headers["Retry-After"] = str(wait)
            response.headers["X-RateLimit-Reset"] = str(wait)
            raise Refused(response)

    def sources(self) -> list[Source]:
        """Every configured source of this type."""
        return self.hub.sources_of_type(TYPE_NAME)

    def install_cors(self, bp: Blueprint) -> None:
        @bp.after_request
        async def cors(response: Response) -> Response:
            origin = request.headers.get("Origin")
            if not origin:
                return response
            source: Source | None = g.get("tracking_source")
            if source is not None:
                allowed = origin_allowed(source.options.allowed_origins, origin)
            else:  # a preflight or a refused key: no source to ask, so ask them all
                allowed = any(origin_allowed(s.options.allowed_origins, origin) for s in self.sources())
            if allowed:
                add_cors_headers(
                    response,
                    origin,
                    preflight=request.method == "OPTIONS",
                    requested_headers=request.headers.get("Access-Control-Request-Headers"),
                )
            return response

        @bp.errorhandler(Refused)
        async def refused(error: Refused) -> Response:
            return error.response
