"""What every route of the tracking-API source shares: authentication, origin checks, the
request's arrival, and the CORS hook that runs on every answer."""

from __future__ import annotations

from quart import Blueprint, Response, g, request

from gateway import Arrival, Ingest, Source, add_cors_headers, basic_auth_user, error_response, origin_allowed

from ._config import TYPE_NAME


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


class Routes:
    """Helpers bound to the core's :class:`gateway.Ingest`, for the route modules."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def arrival(self) -> Arrival:
        """Now, and this request's client address."""
        return self.ingest.arrival(request.remote_addr, request.headers.get("X-Forwarded-For"))

    def header_key(self) -> str | None:
        return basic_auth_user(request)

    def authenticate(self, write_key: object) -> Source | None:
        """The source of a write key (any JSON value: only a string can be one)."""
        return self.ingest.authenticate(write_key, TYPE_NAME)

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

    def source_from_here(self, write_key: object) -> Source | None:
        """The source of a write key, refused (403) when this request's origin may not use it."""
        source = self.source_for(write_key)
        if source is not None:
            self.check_origin(source)
        return source

    def sources(self) -> list[Source]:
        """Every configured source of this type."""
        return self.ingest.sources_of_type(TYPE_NAME)

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
