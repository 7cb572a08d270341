"""One client connection: hypercorn's HTTP/1.1 protocol driven over a socket whose sends are
serialised and bounded, and whose receives carry the deadline of the connection's phase.

This replaces hypercorn's ``trio.tcp_server.TCPServer``, whose sends from two tasks at once (the
app's response, and the 400 for a malformed request read meanwhile) tripped trio's conflict
detector and ended the whole listener (issue 12). It speaks HTTP/1.1 only: hypercorn switches a
connection to HTTP/2 on ``Upgrade: h2c`` or the h2 preface, and its h2 flow control then waited,
out of reach of any send bound, on a client that stopped reading: one such connection held a
shutdown for minutes. No Segment client speaks h2c; such a connection is closed.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError, H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import AppWrapper

#: The phases of a connection; each has its own receive deadline (``processing`` none: the app's
#: own bounds apply). With ``send``, they label ``gateway_connections_timed_out_total``.
HEAD, BODY, PROCESSING, IDLE = "head", "body", "processing", "idle"
#: The most one receive reads (as hypercorn).
MAX_RECV = 2**16
#: How long closing a connection may take (shielded: it runs during cancellation too).
CLOSE_SECS = 1.0


@dataclass(frozen=True)
class Limits:
    """What bounds a connection: read when it is accepted (so a reload applies to new
    connections), and for the graceful timeout when its listener stops."""

    max_connections: int
    request_head_timeout_secs: float
    body_chunk_timeout_secs: float
    body_timeout_secs: float
    keep_alive_timeout_secs: float
    send_timeout_secs: float
    graceful_shutdown_secs: float
    retry_after_secs: int


class _Request:
    __slots__ = ("reading", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.reading = True  # its body is still arriving


class Connection:
    """One accepted connection, served until it closes.

    Sends are serialised (hypercorn sends from the app's task and from the reading task, and
    closes from either) and each is bounded by ``send_timeout_secs``: a client that does not
    read its response is dropped. Each receive is bounded by the deadline of the phase the
    connection is in, which :class:`_TrackedApp` moves as requests start and end:

    - ``head``: from accept, or from the first byte after an idle period, the whole request
      head must arrive within ``request_head_timeout_secs``;
    - ``body``: from the end of the head, no gap longer than ``body_chunk_timeout_secs``, and
      the whole body within ``body_timeout_secs``;
    - ``processing``: none (the app's own bounds apply);
    - ``idle``: a keep-alive connection is closed after ``keep_alive_timeout_secs``.

    Args:
        stream: The accepted socket stream; :meth:`run` does not close it (the caller does).
        limits: The limits in force when it was accepted.
        on_timeout: Called with the phase when a deadline ends the connection.
    """

    def __init__(self, stream: trio.SocketStream, limits: Limits, on_timeout: Callable[[str], None]) -> None:
        self._stream = stream
        self._limits = limits
        self._on_timeout = on_timeout
        self._send_lock = trio.Lock()
        self._receive_scope: trio.CancelScope | None = None
        self._protocol: H11Protocol | None = None
        self._draining = False
        now = trio.current_time()
        self._head_since: float | None = now
        self._idle_since = now
        self._last_data = now
        self._requests: dict[int, _Request] = {}
        self._next_request = 0

    async def run(self, app: AppWrapper, settings: HypercornConfig, context: WorkerContext) -> None:
        """Serve HTTP/1.1 requests to ``app`` until either side closes or a deadline passes.

        Error handling: hypercorn's own errors propagate (the caller's barrier counts them).
        """
        sock = self._stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
        except OSError:  # already gone
            return
        try:
            async with TaskGroup() as task_group:
                self._protocol = protocol = H11Protocol(
                    _TrackedApp(app, self),
                    settings,
                    context,
                    task_group,
                    ConnectionState({}),
                    False,
                    client,
                    server,
                    self._protocol_send,
                )
                # HTTP/2 is not served: such a connection is closed (see the module docstring).
                with suppress(H2CProtocolRequiredError, H2ProtocolAssumedError):
                    await self._read(protocol)
                await protocol.handle(Closed())  # a request under way sees http.disconnect
        finally:
            await self._close()

    def drain(self) -> None:
        """The listener is stopping: close now if no request is under way, else after it."""
        self._draining = True
        self._moved()

    # -- phases ------------------------------------------------------------------------------

    def phase(self) -> tuple[str, float]:
        """The current phase and the deadline of the next receive."""
        limits = self._limits
        if self._requests:
            reading = [r.started for r in self._requests.values() if r.reading]
            if not reading:
                return PROCESSING, math.inf
            return BODY, min(self._last_data + limits.body_chunk_timeout_secs, min(reading) + limits.body_timeout_secs)
        if self._draining:
            return IDLE, -math.inf
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

    # -- the socket --------------------------------------------------------------------------

    async def _read(self, protocol: H11Protocol) -> None:
        while True:
            try:
                data = await self._receive()
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                return
            await protocol.handle(RawData(data))
            if not data:
                return

    async def _receive(self) -> bytes:
        while True:
            with trio.CancelScope(deadline=self.phase()[1]) as scope:
                self._receive_scope = scope
                try:
                    data = await self._stream.receive_some(MAX_RECV)
                finally:
                    self._receive_scope = None
            if not scope.cancelled_caught:
                break
            phase, deadline = self.phase()
            if deadline <= trio.current_time():  # (else the phase moved on as it passed: go on)
                if not self._draining:
                    self._on_timeout(phase)
                raise trio.TooSlowError(f"{phase} timeout")
        if data:
            self._last_data = trio.current_time()
            if not self._requests and self._head_since is None:
                self._head_since = self._last_data
        return bytes(data)

    async def _protocol_send(self, event: Event) -> None:
        """What hypercorn's protocol asks of the socket (``Updated`` is ignored: the phases come
        from :class:`_TrackedApp`)."""
        assert self._protocol is not None
        if isinstance(event, RawData):
            try:
                await self._send(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self._protocol.handle(Closed())
        elif isinstance(event, Closed):
            await self._close()
            await self._protocol.handle(Closed())

    async def _send(self, data: bytes) -> None:
        # Shielded, as hypercorn's: a send cancelled part way would leave half a response on
        # the wire. Bounded instead by the send timeout.
        with trio.move_on_after(self._limits.send_timeout_secs, shield=True) as scope:
            async with self._send_lock:
                await self._stream.send_all(data)
        if scope.cancelled_caught:
            self._on_timeout("send")
            await self._stream.aclose()
            raise trio.BrokenResourceError("the client did not take the response in time")

    async def _close(self) -> None:
        with trio.move_on_after(CLOSE_SECS, shield=True):
            async with self._send_lock:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._stream.send_eof()
            await self._stream.aclose()


class _TrackedApp:
    """hypercorn's app wrapper for one connection, telling it where its requests are: called
    (head received), body read or response started (processing), answered."""

    def __init__(self, app: AppWrapper, connection: Connection) -> None:
        self._app = app
        self._connection = connection

    async def __call__(
        self,
        scope: Any,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        connection = self._connection
        request = connection.request_started()
        if scope["type"] != "http":
            # The gateway serves no WebSockets: refuse before any app code (hypercorn answers 403).
            try:
                await send({"type": "websocket.close", "code": 1008})
            except h11.LocalProtocolError:
                pass  # hypercorn answered an early frame with its own 400 meanwhile; it closes
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
            await self._app(scope, tracked_receive, tracked_send, sync_spawn, call_soon)
        finally:
            connection.request_done(request)
