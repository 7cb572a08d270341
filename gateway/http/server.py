"""Serving HTTP on a listener: accept, bound the number of open connections, and run each one
(gateway.http.connection) behind a barrier, so that nothing one client sends can end the listener.

This replaces ``hypercorn.trio.serve``: there, a malformed request made hypercorn send its 400
while the app was still sending on the same socket, trio's ``BusyResourceError`` escaped the
listener's nursery and the daemon exited (issue 12; hypercorn #203, #225). Here an error while
serving one connection ends that connection only; it is counted and logged.
"""

from __future__ import annotations

import resource
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import repr_socket_addr, wrap_app

from gateway.errors import exception_leaves
from gateway.http.app import error_body
from gateway.http.connection import CLOSE_SECS, Connection, Limits
from gateway.telemetry import ThrottledWarning

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.typing import AppWrapper

    from gateway.config import ServerConfig
    from gateway.metrics import Metrics

log = structlog.get_logger("gateway.http.server")

#: Connections being refused (503) at once, per listener, beyond ``max_connections``; past it a
#: connection is closed without an answer, so a flood cannot hold more descriptors than this.
REFUSAL_RESERVE = 64
#: How long a refused connection may take to get its 503 and close.
REFUSAL_SECS = 1.0
#: File descriptors kept for everything but client connections: the log (database, WAL, shared
#: memory), destinations' files and sockets, the listeners, config and plugin files.
FD_RESERVE = 256


def limits_from_config(server: ServerConfig, *, max_connections: int) -> Limits:
    """The ``[server]`` limits, with ``max_connections`` as :func:`fit_open_files` allowed."""
    return Limits(
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
    closed: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on ``settings.bind`` until ``shutdown_trigger`` returns.

    Modelled on hypercorn's ``trio.run.worker_serve``, without the ASGI lifespan (the gateway
    owns its apps' lifecycle), TLS, QUIC and HTTP/2 (see gateway.http.connection).

    Args:
        app: An ASGI app.
        settings: Hypercorn's settings (bind, backlog, h11 limits, error log).
        api: Names the listener in metrics and logs (``http``, ``admin``).
        limits: Returns the limits in force (called per connection, and at stop).
        metrics: Where connections are counted.
        shutdown_trigger: Returns when the listener is to stop.
        closed: Set once the listening sockets are closed, while connections may still finish
            (the address can be bound again then).
        task_status: Receives the bound addresses (``http://host:port``) once listening.

    Resource handling:
        On shutdown the listening sockets close at once (new clients are refused, not queued,
        and a reload may bind the address again), idle keep-alive connections close, and
        connections with a request in flight get ``graceful_shutdown_secs`` (read then) before
        they are cancelled.

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
    async with trio.open_nursery() as connections:
        try:
            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(partial(trio.serve_listeners, gate.handle, listeners, handler_nursery=connections))
                task_status.started(binds)
                await shutdown_trigger()
                acceptor.cancel_scope.cancel()
        finally:
            for listener in listeners:
                with trio.move_on_after(CLOSE_SECS, shield=True):
                    await listener.aclose()
            if closed is not None:
                closed.set()
            # As hypercorn: idle connections close now, busy ones get the graceful timeout.
            with trio.CancelScope(shield=True):
                await gate.context.terminated.set()
            for connection in gate.connections:
                connection.drain()
            connections.cancel_scope.deadline = trio.current_time() + limits().graceful_shutdown_secs


class _Gate:
    """One listener's connection handler: the limit on open connections, and the barrier."""

    def __init__(
        self, app: AppWrapper, settings: HypercornConfig, api: str, limits: Callable[[], Limits], metrics: Metrics
    ) -> None:
        self.app = app
        self.settings = settings
        self.api = api
        self.limits = limits
        #: hypercorn's per-worker state; ``terminated`` stops keep-alive once shutdown begins.
        self.context = WorkerContext(None)
        self.connections: set[Connection] = set()
        self.refusing = 0
        self._open_gauge = metrics.connections_open.labels(api)
        self._refused = metrics.connections_refused.labels(api)
        self._errors = metrics.connection_errors
        self._timed_out = metrics.connections_timed_out
        self._warn = ThrottledWarning(log, "connection_failed")

    async def handle(self, stream: trio.SocketStream) -> None:
        limits = self.limits()
        if len(self.connections) >= limits.max_connections:
            await self._refuse(stream, limits)
            return
        connection = Connection(stream, limits, self._on_timeout)
        self.connections.add(connection)
        self._open_gauge.inc()
        try:
            await connection.run(self.app, self.settings, self.context)
        except* Exception as group:  # (Cancelled and KeyboardInterrupt go on up)
            failure = exception_leaves(group)[0]
            kind = type(failure).__name__
            self._errors.labels(self.api, kind).inc()
            self._warn(api=self.api, error_type=kind, error=str(failure)[:200])
        finally:
            self.connections.discard(connection)
            self._open_gauge.dec()
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
