"""Serving HTTP connections safely: hypercorn's protocol code, one connection at a time, behind a
barrier, with deadlines for slow and idle clients and a bound on open connections.

We run hypercorn's per-connection ``TCPServer`` ourselves instead of ``hypercorn.trio.serve`` so
that nothing one client sends can end the listener. A malformed request made hypercorn send its
400 while the app was still sending on the same socket; trio's conflict detector raised
``BusyResourceError``, which escaped the listener's nursery and stopped the daemon (issue 12,
hypercorn #203 and #225). Here each connection's stream is a :class:`_Connection` that serialises
sends, bounds each one, and enforces the receive deadline of the phase the connection is in; an
error that still escapes hypercorn ends that connection only, and is counted and logged.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import repr_socket_addr, wrap_app

from gateway.errors import exception_leaves
from gateway.http.app import error_body
from gateway.telemetry import ThrottledWarning

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.typing import AppWrapper

    from gateway.config import ServerConfig
    from gateway.metrics import Metrics

log = structlog.get_logger("gateway.server")

#: The phases of a connection; each has its own receive deadline (``processing`` none: the app's
#: own bounds apply). They label ``gateway_connections_timed_out_total``, with ``send``.
HEAD, BODY, PROCESSING, IDLE = "head", "body", "processing", "idle"
#: Connections being refused (503) at once, per listener, beyond ``max_connections``; past it a
#: connection is closed without an answer, so a flood cannot hold more descriptors than this.
REFUSAL_RESERVE = 64
#: How long a refused connection may take to get its 503 and close.
REFUSAL_SECS = 1.0
#: File descriptors kept for everything but client connections: the log (database, WAL, shared
#: memory), destinations' files and sockets, the listeners, config and plugin files.
FD_RESERVE = 256
#: How long closing a connection may take (it is shielded: it runs during shutdown too).
CLOSE_SECS = 1.0


@dataclass(frozen=True)
class Limits:
    """What bounds each connection of a listener; read for each new connection (so a reload
    applies to new connections) and, for the graceful timeout, when the listener stops."""

    max_connections: int
    request_head_timeout_secs: float
    body_chunk_timeout_secs: float
    body_timeout_secs: float
    keep_alive_timeout_secs: float
    send_timeout_secs: float
    graceful_shutdown_secs: float
    retry_after_secs: int

    @classmethod
    def from_config(cls, server: ServerConfig, *, max_connections: int) -> Limits:
        """The ``[server]`` limits, with ``max_connections`` as :func:`fit_open_files` allowed."""
        return cls(
            max_connections=max_connections,
            request_head_timeout_secs=server.request_head_timeout_secs,
            body_chunk_timeout_secs=server.body_chunk_timeout_secs,
            body_timeout_secs=server.body_timeout_secs,
            keep_alive_timeout_secs=server.keep_alive_timeout_secs,
            send_timeout_secs=server.send_timeout_secs,
            graceful_shutdown_secs=server.graceful_shutdown_secs,
            retry_after_secs=server.retry_after_secs,
        )


def open_files_needed(listeners: int, max_connections: int) -> int:
    """File descriptors ``listeners`` listeners of ``max_connections`` each may need at most."""
    return listeners * (max_connections + REFUSAL_RESERVE) + FD_RESERVE


def fit_open_files(listeners: int, max_connections: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` (up to the hard one) so that ``listeners`` listeners of
    ``max_connections`` connections fit; returns the ``max_connections`` that does fit.

    Error handling: when even the hard limit is too low, a warning says so and the lower value
    is returned, so connections are refused with a 503 rather than accept() failing for all.
    """
    needed = open_files_needed(listeners, max_connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    except (ValueError, OSError):
        pass
    if soft >= needed:
        return max_connections
    fitting = max(1, (soft - FD_RESERVE) // listeners - REFUSAL_RESERVE)
    log.warning(
        "connection_limit_lowered",
        max_connections=max_connections,
        effective_max_connections=fitting,
        open_files_limit=soft,
        open_files_needed=needed,
        hint="raise LimitNOFILE (systemd) or `ulimit -n`, or lower server.max_connections",
    )
    return fitting


async def serve_http(
    app: Any,
    settings: HypercornConfig,
    *,
    api: str,
    limits: Callable[[], Limits],
    metrics: Metrics,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on ``settings.bind`` until ``shutdown_trigger`` returns.

    Modelled on hypercorn's ``trio.run.worker_serve``, without the ASGI lifespan (the gateway
    owns its apps' lifecycle) and without TLS or QUIC.

    Args:
        app: An ASGI app.
        settings: Hypercorn's settings (bind, backlog, h11 limits, error log).
        api: Names the listener in metrics and logs (``http``, ``admin``).
        limits: Returns the limits in force (called per connection, and at stop).
        metrics: Where connections are counted.
        shutdown_trigger: Returns when the listener is to stop.
        task_status: Receives the bound addresses (``http://host:port``) once listening.

    Resource handling:
        The listening sockets close when this returns. On shutdown, accepting stops, idle
        keep-alive connections close, and connections with a request in flight get
        ``graceful_shutdown_secs`` (read then) before they are cancelled.

    Error handling:
        Binding errors (a port in use) propagate before ``task_status.started``. After that, an
        error while serving one connection ends that connection only: it is counted in
        ``gateway_connection_errors_total{api, kind}`` and logged (throttled).
    """
    sockets = settings.create_sockets()
    listeners = []
    binds = []
    for sock in sockets.insecure_sockets:
        sock.listen(settings.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    gate = _Gate(wrap_app(app, settings.wsgi_max_body_size, "asgi"), settings, api, limits, metrics)
    try:
        async with trio.open_nursery() as connections:
            try:
                async with trio.open_nursery() as acceptor:
                    acceptor.start_soon(
                        partial(trio.serve_listeners, gate.handle, listeners, handler_nursery=connections)
                    )
                    task_status.started(binds)
                    await shutdown_trigger()
                    acceptor.cancel_scope.cancel()
            finally:
                # As hypercorn: idle connections close now, busy ones get the graceful timeout.
                with trio.CancelScope(shield=True):
                    await gate.context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + limits().graceful_shutdown_secs
    finally:
        for listener in listeners:
            with trio.move_on_after(CLOSE_SECS, shield=True):
                await listener.aclose()


class _Gate:
    """One listener's connection handler: the limit on open connections, and the barrier."""

    def __init__(
        self, app: AppWrapper, settings: HypercornConfig, api: str, limits: Callable[[], Limits], metrics: Metrics
    ) -> None:
        self.app = app
        self.settings = settings
        self.api = api
        self.limits = limits
        self.context = WorkerContext(None)
        self.open = 0
        self.refusing = 0
        self._open_gauge = metrics.connections_open.labels(api)
        self._refused = metrics.connections_refused.labels(api)
        self._errors = metrics.connection_errors
        self._timed_out = metrics.connections_timed_out
        self._warn = ThrottledWarning(log, "connection_failed")

    async def handle(self, stream: trio.SocketStream) -> None:
        limits = self.limits()
        if self.open >= limits.max_connections:
            await self._refuse(stream, limits)
            return
        self.open += 1
        self._open_gauge.inc()
        try:
            await self._serve(stream, limits)
        finally:
            self.open -= 1
            self._open_gauge.dec()

    async def _serve(self, stream: trio.SocketStream, limits: Limits) -> None:
        connection = _Connection(stream, limits, self._on_timeout)
        server = TCPServer(_TrackedApp(self.app, connection), self.settings, self.context, {}, connection)  # type: ignore[arg-type]
        try:
            await server.run()
        except* Exception as group:  # (Cancelled and KeyboardInterrupt go on up)
            failure = exception_leaves(group)[0]
            kind = type(failure).__name__
            self._errors.labels(self.api, kind).inc()
            self._warn(api=self.api, error_type=kind, error=str(failure)[:200])
        finally:
            with trio.move_on_after(CLOSE_SECS, shield=True):
                await stream.aclose()

    def _on_timeout(self, phase: str) -> None:
        self._timed_out.labels(self.api, phase).inc()

    async def _refuse(self, stream: trio.SocketStream, limits: Limits) -> None:
        """Answer 503 (every official client retries it) and close, within ``REFUSAL_SECS``."""
        self._refused.inc()
        if self.refusing >= REFUSAL_RESERVE:
            with trio.move_on_after(CLOSE_SECS, shield=True):
                await stream.aclose()
            return
        self.refusing += 1
        try:
            with trio.move_on_after(REFUSAL_SECS):
                await stream.send_all(_refusal(limits.retry_after_secs))
                await stream.send_eof()
                # Read what the client sent until it closes: closing with unread data would
                # send a reset, which can destroy the answer before the client reads it.
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.refusing -= 1
            with trio.move_on_after(CLOSE_SECS, shield=True):
                await stream.aclose()


def _refusal(retry_after_secs: int) -> bytes:
    body = msgspec.json.encode(
        error_body(
            "too_many_connections",
            "the gateway has as many connections open as it allows (server.max_connections); retry later",
        )
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {retry_after_secs}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Request:
    __slots__ = ("reading", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.reading = True  # its body is still arriving


class _Connection(trio.abc.HalfCloseableStream):
    """The socket stream hypercorn's ``TCPServer`` uses for one connection.

    It serialises sends (hypercorn sends from the app's task and from the reading task, and
    closes from either: two at once tripped trio's conflict detector), bounds each send with
    ``send_timeout_secs`` (a client that does not read its response is dropped), and bounds each
    receive by the deadline of the connection's phase, which :class:`_TrackedApp` moves as
    requests start and end:

    - ``head``: from accept, or from the first byte after an idle period, the whole request
      head must arrive within ``request_head_timeout_secs``;
    - ``body``: from the head, no gap longer than ``body_chunk_timeout_secs`` and the whole body
      within ``body_timeout_secs``;
    - ``processing``: none (the app's own bounds apply);
    - ``idle``: a keep-alive connection is closed after ``keep_alive_timeout_secs``.

    A receive past its deadline raises ``trio.TooSlowError``, on which hypercorn closes the
    connection.
    """

    def __init__(self, stream: trio.SocketStream, limits: Limits, on_timeout: Callable[[str], None]) -> None:
        self._stream = stream
        #: hypercorn reads the peer and local addresses from it.
        self.socket = stream.socket
        self._limits = limits
        self._on_timeout = on_timeout
        self._send_lock = trio.Lock()
        self._receive_scope: trio.CancelScope | None = None
        now = trio.current_time()
        self._head_since: float | None = now
        self._idle_since = now
        self._last_data = now
        self._requests: dict[int, _Request] = {}
        self._next_request = 0

    # -- phases ----------------------------------------------------------------------------

    def phase(self) -> tuple[str, float]:
        """The current phase and the deadline of the next receive."""
        limits = self._limits
        if self._requests:
            reading = [r.started for r in self._requests.values() if r.reading]
            if not reading:
                return PROCESSING, math.inf
            return BODY, min(self._last_data + limits.body_chunk_timeout_secs, min(reading) + limits.body_timeout_secs)
        if self._head_since is not None:
            return HEAD, self._head_since + limits.request_head_timeout_secs
        return IDLE, self._idle_since + limits.keep_alive_timeout_secs

    def _moved(self) -> None:
        if self._receive_scope is not None:
            self._receive_scope.deadline = self.phase()[1]

    def request_started(self) -> int:
        self._next_request += 1
        now = trio.current_time()
        self._requests[self._next_request] = _Request(now)
        self._head_since = None
        self._last_data = now
        self._moved()
        return self._next_request

    def body_received(self, request: int) -> None:
        if (state := self._requests.get(request)) is not None and state.reading:
            state.reading = False
            self._moved()

    def request_done(self, request: int) -> None:
        if self._requests.pop(request, None) is not None and not self._requests:
            self._idle_since = trio.current_time()
            self._moved()

    # -- the stream --------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            with trio.CancelScope(deadline=self.phase()[1]) as scope:
                self._receive_scope = scope
                try:
                    data = await self._stream.receive_some(max_bytes)
                finally:
                    self._receive_scope = None
            if not scope.cancelled_caught:
                break
            phase, deadline = self.phase()
            if deadline <= trio.current_time():  # (else the phase moved on as it passed: go on)
                self._on_timeout(phase)
                raise trio.TooSlowError(f"{phase} timeout")
        if data:
            self._last_data = trio.current_time()
            if not self._requests and self._head_since is None:
                self._head_since = self._last_data
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._limits.send_timeout_secs) as scope:
            async with self._send_lock:
                await self._stream.send_all(data)
        if scope.cancelled_caught:
            self._on_timeout("send")
            await self.aclose()
            raise trio.BrokenResourceError("the client did not take the response in time")

    async def send_eof(self) -> None:
        with trio.move_on_after(self._limits.send_timeout_secs):
            async with self._send_lock:
                await self._stream.send_eof()

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _TrackedApp:
    """hypercorn's app wrapper for one connection, telling the connection where its requests
    are: called (head received), body read or response started (processing), answered."""

    def __init__(self, app: AppWrapper, connection: _Connection) -> None:
        self._app = app
        self._connection = connection

    async def __call__(
        self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]], *spawn: Any
    ) -> None:
        connection = self._connection
        request = connection.request_started()
        if scope["type"] != "http":
            # The gateway serves no WebSockets: refuse before any app code (hypercorn answers 403).
            try:
                await send({"type": "websocket.close", "code": 1008})
            finally:
                connection.request_done(request)
            return

        async def tracked_receive() -> Any:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                connection.body_received(request)
            return message

        async def tracked_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                connection.body_received(request)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                connection.request_done(request)

        try:
            await self._app(scope, tracked_receive, tracked_send, *spawn)
        finally:
            connection.request_done(request)
