"""The HTTP layer: a quart-trio app that mounts each source type's routes, plus shared helpers.

It parses and authenticates; it holds no business rules. Helpers here give every source plugin
the same body limits, gzip handling, write-key parsing and JSON error shape.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway.errors import LogUnavailableError
from gateway.messages import Invalid

if TYPE_CHECKING:
    from quart import Request

    from gateway.components import SourceType
    from gateway.ingest import IngestHub

log = structlog.get_logger("gateway.http")

_encode = msgspec.json.Encoder().encode
SUCCESS_BODY = b'{"success":true}'
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, encoded with msgspec."""
    return Response(_encode(payload), status=status, headers=headers, content_type=JSON)


def success_response() -> Response:
    """The Tracking API's ``200 {"success": true}``."""
    return Response(SUCCESS_BODY, status=200, content_type=JSON)


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    """An error answer every Segment client can read: python reads ``code``/``message``,
    ruby reads ``error``."""
    body = {"success": False, "code": code, "message": message, "error": message, **extra}
    return json_response(body, status)


def unavailable_response(error: LogUnavailableError, retry_after_secs: int) -> Response:
    """503 with ``Retry-After``: every official client retries it, so nothing is lost."""
    response = error_response(503, error.reason, error.detail)
    response.headers["Retry-After"] = str(retry_after_secs)
    return response


def basic_auth_user(req: Request) -> str | None:
    """The user part of ``Authorization: Basic``: the write key (a missing colon is tolerated)."""
    header = req.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


async def read_body(req: Request, max_bytes: int) -> bytes:
    """The request body, gunzipped when ``Content-Encoding: gzip``, never more than ``max_bytes``.

    The raw body is capped by the app's ``MAX_CONTENT_LENGTH`` while it is read from the socket;
    a gzip body is inflated with a cap, so a gzip bomb stops at ``max_bytes + 1``.

    Raises:
        Invalid: too large, bad gzip, or an encoding we do not speak.
    """
    too_large = Invalid("payload_too_large", f"Exceed payload limit: the body is larger than {max_bytes} bytes")
    length = req.content_length
    if length is not None and length > max_bytes:
        raise too_large
    try:
        data = await req.get_data(cache=False, as_text=False)
        assert isinstance(data, bytes)
    except RequestEntityTooLarge:
        raise too_large from None
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(data) > max_bytes:
            raise too_large
        return data
    if encoding not in ("gzip", "x-gzip"):
        raise Invalid("unsupported_content_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, max_bytes + 1)
    except zlib.error as error:
        raise Invalid("invalid_gzip", f"the body is not valid gzip: {error}") from None
    if len(inflated) > max_bytes or inflater.unconsumed_tail:
        raise too_large
    if not inflater.eof:
        raise Invalid("invalid_gzip", "the gzip body is truncated")
    return inflated


SEND_SHIELD_SECS = 30.0


def shield_sends(app: Any) -> Any:
    """Wrap an ASGI app so that its ``send`` calls are not cancelled part way.

    quart-trio cancels its per-request nursery right after the last ``send`` of a response;
    hypercorn re-arms the connection's keep-alive timer inside that same ``send``. Cancelled
    there, an idle keep-alive connection is never timed out, and SIGTERM waits the whole grace
    period for it. Shielding the send (bounded, so a stuck peer cannot hold it for ever) lets
    hypercorn finish its housekeeping.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def shielded_send(message: Any) -> None:
            # Only the last send of a response does the housekeeping; the rest need no shield.
            if message.get("type") != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            with trio.move_on_after(SEND_SHIELD_SECS, shield=True):
                await send(message)

        await app(scope, receive, shielded_send)

    return wrapped


async def http_error_response(error: HTTPException) -> Response:
    """404, 405, 413... in the same JSON shape as every other error (with ``Allow`` on a 405)."""
    code = (error.name or "error").lower().replace(" ", "_")
    response = error_response(error.code or 400, code, error.description or code)
    if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def create_app(
    hub: IngestHub,
    source_types: Iterable[SourceType],
    *,
    readiness: Callable[[], Awaitable[dict[str, bool]]] | None = None,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
) -> QuartTrio:
    """Build the HTTP app: the routes of every installed source type, ``/health`` (alive),
    ``/ready`` (each check of ``readiness`` true) and ``/metrics`` (Prometheus text)."""
    app = QuartTrio("gateway")
    # The raw body cap while reading from the socket; a gzip body is at most a little larger
    # than what it inflates to, and read_body caps the inflated size exactly.
    app.config["MAX_CONTENT_LENGTH"] = hub.server.max_request_bytes + 64 * 1024
    app.config["BODY_TIMEOUT"] = 30
    for source_type in source_types:
        app.register_blueprint(source_type.blueprint(hub), name=f"source_{source_type.name}")

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        checks = await readiness() if readiness is not None else {}
        ok = all(checks.values())
        return json_response({"ready": ok, "checks": checks}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        if refresh_metrics is not None:
            await refresh_metrics()
        return Response(hub.metrics.render(), status=200, content_type=PROMETHEUS)

    @app.after_request
    async def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        hub.metrics.count_request(rule, response.status_code)
        return response

    app.register_error_handler(HTTPException, http_error_response)

    @app.errorhandler(Invalid)
    async def invalid(error: Invalid) -> Response:
        hub.count_rejected(error.code)
        return error_response(400, error.code, error.message)

    @app.errorhandler(LogUnavailableError)
    async def unavailable(error: LogUnavailableError) -> Response:
        log.warning("ingest_unavailable", reason=error.reason, detail=error.detail)
        return unavailable_response(error, hub.server.retry_after_secs)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        # A bug, not bad input: 503 makes the client send the data again rather than lose it.
        log.exception("request_failed", path=request.path, error_type=type(error).__name__)
        return unavailable_response(
            LogUnavailableError("internal_error", "the gateway hit an unexpected error; retry later"),
            hub.server.retry_after_secs,
        )

    return app
