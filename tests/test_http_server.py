"""gateway.http.server and gateway.http.connection in process: the phase deadlines on a virtual
clock, shutdown, the open files limit, and the shape of the hypercorn internals they drive."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError, H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app

from gateway.http import server
from gateway.http.connection import Limits
from gateway.metrics import Metrics

LIMITS = Limits(
    max_connections=8,
    request_head_timeout_secs=10,
    body_chunk_timeout_secs=5,
    body_timeout_secs=20,
    keep_alive_timeout_secs=30,
    send_timeout_secs=15,
    graceful_shutdown_secs=3,
    retry_after_secs=7,
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200 with its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(str(size)))]})
    await send({"type": "http.response.body", "body": str(size).encode()})


@asynccontextmanager
async def serving(metrics: Metrics) -> AsyncIterator[tuple[str, int, trio.Event]]:
    settings = HypercornConfig()
    settings.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: server.serve_http(
                app,
                settings,
                api="http",
                limits=lambda: LIMITS,
                metrics=metrics,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        )
        host, _, port = binds[0].removeprefix("http://").rpartition(":")
        yield host, int(port), stop
        stop.set()


async def closed_at(stream: trio.SocketStream) -> float:
    """The (virtual) time the server closes ``stream``; what it sent meanwhile is dropped."""
    while await stream.receive_some(65536):
        pass
    return trio.current_time()


async def answer(stream: trio.SocketStream, ending: bytes) -> bytes:
    """What the server sends until it ends with ``ending`` (a whole answer)."""
    received = b""
    while not received.endswith(ending):
        data = await stream.receive_some(65536)
        assert data, f"closed after {received!r}"
        received += data
    return received


def timed_out(metrics: Metrics, phase: str) -> float:
    return metrics.connections_timed_out.labels("http", phase)._value.get()  # type: ignore[no-any-return]


async def test_each_phase_has_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    async with serving(metrics) as (host, port, _):
        # A head that never ends.
        stream = await trio.open_tcp_stream(host, port)
        start = trio.current_time()
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        assert await closed_at(stream) - start == pytest.approx(LIMITS.request_head_timeout_secs, abs=0.1)
        # A body that stops.
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        start = trio.current_time()
        assert await closed_at(stream) - start == pytest.approx(LIMITS.body_chunk_timeout_secs, abs=0.1)
        # A body that trickles within the chunk timeout: the whole-body bound ends it.
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        start = trio.current_time()
        with pytest.raises(trio.BrokenResourceError):  # (the server closed, then reset it)
            for _ in range(1000):
                await stream.send_all(b"x")
                await trio.sleep(LIMITS.body_chunk_timeout_secs / 2)
        assert trio.current_time() - start == pytest.approx(
            LIMITS.body_timeout_secs, abs=LIMITS.body_chunk_timeout_secs
        )
        # Answered, then idle: closed after the keep-alive timeout; a second request in between
        # keeps it open.
        stream = await trio.open_tcp_stream(host, port)
        for _ in range(2):
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            await answer(stream, b"\r\n\r\n3")
            await trio.sleep(LIMITS.keep_alive_timeout_secs / 2)
        start = trio.current_time() - LIMITS.keep_alive_timeout_secs / 2
        assert await closed_at(stream) - start == pytest.approx(LIMITS.keep_alive_timeout_secs, abs=0.1)
    assert [timed_out(metrics, phase) for phase in ("head", "body", "idle")] == [1, 2, 1]


async def test_stopping_closes_idle_connections_at_once_and_lets_a_request_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    async with serving(metrics) as (host, port, stop):
        idle = await trio.open_tcp_stream(host, port)
        busy = await trio.open_tcp_stream(host, port)
        await busy.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        stop.set()
        assert await closed_at(idle) == start
        await busy.send_all(b"cd")  # the request under way still completes
        await answer(busy, b"\r\n\r\n4")
    assert timed_out(metrics, "idle") == 0


async def test_past_max_connections_a_canned_503_is_sent() -> None:
    metrics = Metrics()
    async with serving(metrics) as (host, port, _):
        held = [await trio.open_tcp_stream(host, port) for _ in range(LIMITS.max_connections)]
        await trio.testing.wait_all_tasks_blocked()
        refused = await trio.open_tcp_stream(host, port)
        await refused.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while data := await refused.receive_some(65536):
            answer += data
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"retry-after: 7\r\n" in answer and b"connection: close\r\n" in answer
        assert answer.endswith(b"}") and b'"code":"too_many_connections"' in answer
        for stream in held:
            await stream.aclose()
    assert metrics.connections_refused.labels("http")._value.get() == 1


@pytest.mark.parametrize(
    ("soft", "hard", "allowed", "raised_to"),
    [
        (1024, 65536, 4096, 2 * (4096 + 64) + 256),  # raised toward the hard limit
        (100_000, 100_000, 4096, None),  # fits already
        (1024, 2048, (2048 - 256) // 2 - 64, 2048),  # cannot fit: lowered, with a warning
    ],
)
def test_the_open_files_limit_is_raised_or_max_connections_lowered(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, allowed: int, raised_to: int | None
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: calls.append(limits))
    assert server.fit_open_files(2, 4096) == allowed
    assert calls == ([] if raised_to is None else [(raised_to, hard)])


def test_the_hypercorn_internals_we_drive_keep_their_shape() -> None:
    """gateway.http.connection drives hypercorn's HTTP/1.1 protocol itself (pyproject pins the
    minor version): this fails first if an upgrade changes what it relies on."""
    version = tuple(int(part) for part in importlib.metadata.version("hypercorn").split(".")[:2])
    assert version == (0, 18), "hypercorn changed version: check gateway.http.connection, then the pin"
    assert list(inspect.signature(H11Protocol.__init__).parameters) == [
        "self",
        "app",
        "config",
        "context",
        "task_group",
        "connection_state",
        "ssl",
        "client",
        "server",
        "send",
    ]
    assert inspect.iscoroutinefunction(H11Protocol.handle)
    assert inspect.iscoroutinefunction(TaskGroup.__aenter__) and inspect.iscoroutinefunction(TaskGroup.spawn_app)
    context = WorkerContext(None)
    assert inspect.iscoroutinefunction(context.terminated.set) and not context.terminated.is_set()
    assert [f.name for f in dataclasses.fields(RawData)][:1] == ["data"]
    assert dataclasses.fields(Closed) == () and [f.name for f in dataclasses.fields(Updated)] == ["idle"]
    assert issubclass(H2CProtocolRequiredError, Exception) and issubclass(H2ProtocolAssumedError, Exception)
    assert ConnectionState({"a": 1}) == {"a": 1}
    assert list(inspect.signature(wrap_app).parameters) == ["app", "wsgi_max_body_size", "mode"]
    assert callable(parse_socket_addr) and callable(repr_socket_addr)
    assert issubclass(h11.LocalProtocolError, Exception)
    config = HypercornConfig()
    assert callable(config.create_sockets) and isinstance(config.backlog, int)
