"""The HTTP layer: a quart-trio app that mounts each source type's routes, plus shared helpers.

It parses and authenticates; it holds no business rules. Helpers here give every source plugin
the same body limits, gzip handling, write-key parsing and JSON error shape.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway.errors import LogUnavailableError, RateLimitedError
from gateway.http.fastpath import FastPath, FastRequest, Send, send_json
from gateway.messages import Invalid

if TYPE_CHECKING:
    from quart import Request

    from gateway.components import SourceType
    from gateway.config import ServerConfig
    from gateway.ingest.hub import IngestHub

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
    return json_response(error_body(code, message, **extra), status)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON of an error answer (see :func:`error_response`)."""
    return {"success": False, "code": code, "message": message, "error": message, **extra}


def unavailable_response(error: LogUnavailableError, retry_after_secs: int) -> Response:
    """503 with ``Retry-After``: every official client retries it, so nothing is lost."""
    response = error_response(503, error.reason, error.detail)
    response.headers["Retry-After"] = str(retry_after_secs)
    return response


def rate_limited_response(error: RateLimitedError) -> Response:
    """429 with ``Retry-After`` (and ``X-RateLimit-Reset``): every official client waits and
    sends again."""
    response = error_response(429, "rate_limited", f"this source accepts {error.events_per_sec:g} events/s")
    response.headers["Retry-After"] = str(error.wait_secs)
    response.headers["X-RateLimit-Reset"] = str(error.wait_secs)
    return response


def basic_auth_user(req: Request) -> str | None:
    """The user part of ``Authorization: Basic``: the write key (a missing colon is tolerated)."""
    return write_key_of(req.headers.get("Authorization"))


def write_key_of(authorization: str | None) -> str | None:
    """The user part of an ``Authorization: Basic`` header value, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # (a UnicodeDecodeError, or non-ASCII base64, is a ValueError)
        return None
    return decoded.partition(":")[0] or None


async def read_body(req: Request, max_bytes: int) -> bytes:
    """The request body, gunzipped when ``Content-Encoding: gzip``, never more than ``max_bytes``.

    The raw body is capped by the app's ``MAX_CONTENT_LENGTH`` while it is read from the socket;
    a gzip body is inflated with a cap, so a gzip bomb stops at ``max_bytes + 1``.

    Raises:
        Invalid: too large, bad gzip, or an encoding we do not speak.
    """
    length = req.content_length
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    try:
        data = await req.get_data(cache=False, as_text=False)
        assert isinstance(data, bytes)
    except RequestEntityTooLarge:
        raise _too_large(max_bytes) from None
    return decoded_body(data, req.headers.get("Content-Encoding"), max_bytes)


def _too_large(max_bytes: int) -> Invalid:
    return Invalid("payload_too_large", f"Exceed payload limit: the body is larger than {max_bytes} bytes")


def decoded_body(data: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """A raw request body as its ``Content-Encoding`` header says, gunzipped with a cap.

    Raises:
        Invalid: too large, bad gzip, or an encoding we do not speak.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        return data
    if encoding not in ("gzip", "x-gzip"):
        raise Invalid("unsupported_content_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, max_bytes + 1)
    except zlib.error as error:
        raise Invalid("invalid_gzip", f"the body is not valid gzip: {error}") from None
    if len(inflated) > max_bytes or inflater.unconsumed_tail:
        raise _too_large(max_bytes)
    if not inflater.eof:
        raise Invalid("invalid_gzip", "the gzip body is truncated")
    if inflater.unused_data:  # trailing bytes, or a second gzip member no client sends
        raise Invalid("invalid_gzip", "the body has data after the end of its gzip stream")
    return inflated


#: How long the middleware waits for the body of a request a fast path claimed. A slower one
#: goes to the Quart routes (same answers). Either way the connection's own deadlines
#: (``server.body_chunk_timeout_secs``, ``server.body_timeout_secs``, see gateway.http.connection) bound
#: the body; this only decides who reads the rest of it.
FAST_BODY_TIMEOUT_SECS = 5.0


def mount_fast_paths(app: Any, fast_paths: Sequence[FastPath], hub: IngestHub) -> Any:
    """ASGI middleware: offer each request a fast path claims to it, the rest to ``app``."""
    if not fast_paths:
        return app

    async def dispatch(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] == "http":
            for fast_path in fast_paths:
                rule = fast_path.route(scope["method"], scope["path"])
                if rule is not None:
                    receive = await _offer(fast_path, rule, scope, receive, send, hub)
                    if receive is None:
                        return
                    break
        await app(scope, receive, send)

    return dispatch


async def _offer(
    fast_path: FastPath, rule: str, scope: dict[str, Any], receive: Any, send: Send, hub: IngestHub
) -> Any:
    """Read the body and offer the request to ``fast_path``: None when it answered, else the
    ``receive`` that replays what was read, for the Quart app."""
    wanted = fast_path.headers
    headers: dict[str, str] = {}
    declared = None
    for name, value in scope["headers"]:
        if name in wanted:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))  # the first, as Quart's get
        elif name == b"content-length":
            declared = value
    limit = fast_path.max_body_bytes()
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return receive
    received: list[dict[str, Any]] = []
    size = 0
    complete = False
    with trio.move_on_after(FAST_BODY_TIMEOUT_SECS):
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                break
            if not message.get("more_body", False):
                complete = True
                break
    if complete:
        body = b"".join(m.get("body", b"") for m in received)
        request = FastRequest(scope["path"], (scope.get("client") or ("<local>",))[0], headers, scope["method"])
        if await _answer(fast_path, rule, request, body, send, hub):
            return None
    return _replay(received, receive)


async def _answer(
    fast_path: FastPath, rule: str, request: FastRequest, body: bytes, send: Send, hub: IngestHub
) -> bool:
    """:meth:`FastPath.answer`, with the same answers as the Quart app's error handlers, and
    the request counted as the Quart app counts it: whether it was answered."""
    started = False

    async def tracked_send(message: dict[str, Any]) -> None:
        nonlocal started
        if not started:
            started = True
            hub.metrics.count_request(rule, message["status"])
        await send(message)

    try:
        answered = await fast_path.answer(request, body, tracked_send)
        if not answered and started:
            raise RuntimeError(f"{type(fast_path).__name__} declined a request it had begun to answer")
        return answered
    except LogUnavailableError as error:
        if started:
            raise
        log.warning("ingest_unavailable", reason=error.reason, detail=error.detail)
        unavailable = error
    except Exception as error:
        if started:
            raise
        log.exception("request_failed", path=request.path, error_type=type(error).__name__)
        unavailable = LogUnavailableError("internal_error", "the gateway hit an unexpected error; retry later")
    body = _encode(error_body(unavailable.reason, unavailable.detail))
    headers = [(b"retry-after", str(hub.limits.retry_after_secs).encode()), *fast_path.error_headers(request)]
    await send_json(tracked_send, 503, body, headers)
    return True


def _replay(received: list[dict[str, Any]], receive: Any) -> Any:
    """A ``receive`` that gives back ``received`` first, then reads on."""
    pending = deque(received)

    async def replaying() -> dict[str, Any]:
        if pending:
            return pending.popleft()
        message: dict[str, Any] = await receive()
        return message

    return replaying


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


def without_lifespan(app: Any) -> Any:
    """Wrap an ASGI app so that a server serving it runs none of its lifespan.

    The gateway's apps outlive any one listener: a reload that moves a listener starts the new
    one before it stops the old. quart-trio keeps one background nursery per app, opened by the
    lifespan, so the old listener's shutdown put a deadline on the nursery the new listener's
    lifespan had just opened, and the daemon crashed when it passed. The apps have no startup
    or shutdown work of their own; the gateway owns their lifecycle.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


async def http_error_response(error: HTTPException) -> Response:
    """404, 405, 413... in the same JSON shape as every other error (with ``Allow`` on a 405)."""
    code = (error.name or "error").lower().replace(" ", "_")
    response = error_response(error.code or 400, code, error.description or code)
    if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def configure_app_limits(app: QuartTrio, server: ServerConfig) -> None:
    """Apply ``[server]``'s body limits to the app (at start and on reload)."""
    # The raw body cap while reading from the socket; a gzip body is at most a little larger
    # than what it inflates to, and read_body caps the inflated size exactly.
    app.config["MAX_CONTENT_LENGTH"] = server.max_request_bytes + 64 * 1024
    # The connection's deadline (gateway.http.connection) ends a slower body first; this one is the
    # backstop for an app served without it (tests, the benchmark's in-process runs).
    app.config["BODY_TIMEOUT"] = server.body_timeout_secs


class Readiness(msgspec.Struct, frozen=True):
    """What ``/ready`` answers (200 when ``ready``, else 503): each check, and why not."""

    ready: bool
    checks: dict[str, bool]
    #: One line per failing check, for the operator.
    reasons: list[str] = []


def create_app(
    hub: IngestHub,
    source_types: Iterable[SourceType],
    *,
    readiness: Callable[[], Awaitable[Readiness]] | None = None,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
) -> QuartTrio:
    """Build the HTTP app: the routes of every installed source type, ``/health`` (alive),
    ``/ready`` (what ``readiness`` says) and ``/metrics`` (Prometheus text)."""
    app = QuartTrio("gateway")
    # The raw body cap while reading from the socket (see configure_app_limits); the runtime
    # applies [server]'s own values.
    app.config["MAX_CONTENT_LENGTH"] = hub.limits.max_request_bytes + 64 * 1024
    app.config["BODY_TIMEOUT"] = 30
    fast_paths = []
    for source_type in source_types:
        app.register_blueprint(source_type.blueprint(hub), name=f"source_{source_type.name}")
        if source_type.fast_path is not None:
            fast_paths.append(source_type.fast_path(hub))
    app.asgi_app = mount_fast_paths(app.asgi_app, fast_paths, hub)  # type: ignore[method-assign]

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        state = await readiness() if readiness is not None else Readiness(ready=True, checks={})
        return json_response(state, 200 if state.ready else 503)

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

    @app.errorhandler(RateLimitedError)
    async def rate_limited(error: RateLimitedError) -> Response:
        return rate_limited_response(error)

    @app.errorhandler(LogUnavailableError)
    async def unavailable(error: LogUnavailableError) -> Response:
        log.warning("ingest_unavailable", reason=error.reason, detail=error.detail)
        return unavailable_response(error, hub.limits.retry_after_secs)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        # A bug, not bad input: 503 makes the client send the data again rather than lose it.
        log.exception("request_failed", path=request.path, error_type=type(error).__name__)
        return unavailable_response(
            LogUnavailableError("internal_error", "the gateway hit an unexpected error; retry later"),
            hub.limits.retry_after_secs,
        )

    return app
