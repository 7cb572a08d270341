"""Hostile clients against a real gateway process (issue 12): what one connection does ends at
most that connection, on the HTTP and the admin listener; slow and idle clients are closed
after the documented limits; past ``max_connections`` a client gets a 503 it can retry."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.testing import GatewayProcess
from tests.gatewayproc import WRITE_KEY, config_text, read_jsonl, wait_until
from tests.rawhttp import (
    ADMIN_TOKEN,
    admin_url,
    connect,
    exchange,
    metric,
    read_until_closed,
    reset,
    serving,
    status_of,
    tracebacks,
)

ADMIN = f'\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "{ADMIN_TOKEN}"\n'

#: The issue's reproduction: a chunk size that is not hex.
BAD_CHUNK = b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"

#: Framing that hypercorn or h11 handled badly, each on a connection of its own.
HOSTILE = {
    "bad_chunk": BAD_CHUNK,
    "bad_chunk_post": b"POST /v1/track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc\r\nzz\r\n",
    # h11's "Got data when expecting EOF" (hypercorn #203): bytes after a Connection: close request.
    "data_after_close": b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    "data_after_http10": b"GET /health HTTP/1.0\r\n\r\nGARBAGE\r\n\r\n",
    # Trailing data after an upgrade request (hypercorn #225).
    "h2c_upgrade_then_junk": b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n\x00\x00\x12\x04junkjunkjunk",
    "websocket_then_frame": b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x85junkjunk",
    "h2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    "length_and_chunked": b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two_lengths": b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 9\r\n\r\nabcd",
    "huge_head": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "bare_lf_and_nul": b"GET /he\x00alth HTTP/1.1\nHost: x\n\n",
    "random_bytes": bytes(range(256)) * 8,
}


def start(tmp_path: Path, server: str = "") -> GatewayProcess:
    config = tmp_path / "gateway.toml"
    text = config_text(tmp_path, extra=ADMIN)
    config.write_text(text.replace("graceful_shutdown_secs = 5\n", f"graceful_shutdown_secs = 5\n{server}"))
    return GatewayProcess(config).start()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway on the test config as it is (no new keys: these tests also run against main)."""
    process = start(tmp_path_factory.mktemp("hostile"))
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(params=["http", "admin"])
def url(request: pytest.FixtureRequest, gateway: GatewayProcess) -> str:
    return gateway.url if request.param == "http" else admin_url(gateway)


def test_the_issue_reproduction_does_not_stop_the_daemon(gateway: GatewayProcess, url: str) -> None:
    """Twenty connections with broken chunking each get hypercorn's 400 and end; the daemon
    goes on. (Before: BusyResourceError escaped the listener and the process exited with 1.)"""
    for i in range(20):
        answer, closed = exchange(url, BAD_CHUNK)
        assert gateway.proc is not None
        exit_code = gateway.proc.poll()
        assert answer.startswith(b"HTTP/1.1 400 ") and closed, f"connection {i + 1}: {answer!r}, exit code {exit_code}"
        assert gateway.proc.poll() is None, f"the daemon exited after {i + 1} connections"
    assert serving(gateway)
    assert not tracebacks(gateway)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_framing_ends_only_its_own_connection(gateway: GatewayProcess, url: str, case: str) -> None:
    for _ in range(3):
        answer, closed = exchange(url, HOSTILE[case], timeout=5)
        # Closed, or answered and kept alive (h11 reads Transfer-Encoding over Content-Length).
        assert closed or answer.startswith(b"HTTP/1.1 "), f"{case}: left open without an answer"
        if answer.startswith(b"HTTP/"):
            assert status_of(answer) in (101, 400, 401, 403, 404, 405, 413, 431), answer[:200]
    assert serving(gateway)
    assert not tracebacks(gateway)


def test_pipelined_requests_are_all_answered_in_order(gateway: GatewayProcess, url: str) -> None:
    paths = ["/health", "/ready", "/nope", "/health"]
    pipeline = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths)
    answer, closed = exchange(url, pipeline + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert closed
    assert answer.count(b"HTTP/1.1 ") == len(paths) + 1, answer


def test_a_reset_mid_request_or_mid_response_ends_only_that_connection(gateway: GatewayProcess, url: str) -> None:
    body = b'{"batch": [' + b",".join([b'{"type":"track","event":"E","userId":"u"}'] * 2000) + b"]}"
    for _ in range(20):
        sock = connect(url)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reset(sock)
        sock = connect(url)
        sock.sendall(
            f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:5000]
        )
        reset(sock)
    assert serving(gateway)
    wait_until(lambda: metric(gateway, "gateway_connections_open", api="http") <= 1, timeout=10)
    assert not tracebacks(gateway)


# -- slow and idle clients ----------------------------------------------------------------------

HEAD_SECS, CHUNK_SECS, BODY_SECS, IDLE_SECS, SEND_SECS = 1.5, 1.0, 3.0, 1.5, 2.0
LIMITS = f"""request_head_timeout_secs = {HEAD_SECS}
body_chunk_timeout_secs = {CHUNK_SECS}
body_timeout_secs = {BODY_SECS}
keep_alive_timeout_secs = {IDLE_SECS}
send_timeout_secs = {SEND_SECS}
"""
#: Time a close may take after its deadline on a loaded 2-core machine.
SLACK = 3.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    """A gateway with short client time limits, and its data_dir."""
    data_dir = tmp_path_factory.mktemp("strict")
    process = start(data_dir, LIMITS)
    try:
        yield process, data_dir
    finally:
        process.kill()


def closed_after(sock: socket.socket, started: float, timeout: float) -> float:
    """Seconds from ``started`` until the server closed ``sock`` (fails if it stays open)."""
    _, closed = read_until_closed(sock, timeout)
    assert closed, f"still open after {time.monotonic() - started:.1f}s"
    return time.monotonic() - started


def test_a_head_sent_a_line_at_a_time_is_cut_at_the_head_timeout(strict: tuple[GatewayProcess, Path]) -> None:
    process, _ = strict
    before = metric(process, "gateway_connections_timed_out_total", api="http", phase="head")
    with connect(process.url) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/track HTTP/1.1\r\n")
        sock.settimeout(0.3)
        for i in range(100):  # slow loris: a header line every 0.3 s, for ever
            try:
                sock.sendall(f"X-Line-{i}: x\r\n".encode())
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        elapsed = time.monotonic() - started
    assert HEAD_SECS * 0.9 <= elapsed <= HEAD_SECS + SLACK, elapsed
    assert metric(process, "gateway_connections_timed_out_total", api="http", phase="head") == before + 1


def test_a_stalled_body_is_cut_at_the_chunk_timeout(strict: tuple[GatewayProcess, Path]) -> None:
    process, _ = strict
    with connect(process.url) as sock:
        sock.sendall(b'POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"userId":')
        started = time.monotonic()
        elapsed = closed_after(sock, started, CHUNK_SECS + SLACK)
    assert elapsed >= CHUNK_SECS * 0.9, elapsed
    assert metric(process, "gateway_connections_timed_out_total", api="http", phase="body") >= 1


def test_a_trickling_body_is_cut_at_the_body_timeout(strict: tuple[GatewayProcess, Path]) -> None:
    process, _ = strict
    with connect(process.url) as sock:
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        sock.settimeout(CHUNK_SECS / 3)
        closed = False
        while time.monotonic() - started < BODY_SECS + SLACK:
            try:
                sock.sendall(b" ")  # always within the chunk timeout
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed:
                break
        elapsed = time.monotonic() - started
    assert closed and BODY_SECS * 0.9 <= elapsed <= BODY_SECS + SLACK, elapsed


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(strict: tuple[GatewayProcess, Path]) -> None:
    process, _ = strict
    with connect(process.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        elapsed = closed_after(sock, started, IDLE_SECS + SLACK)
    assert elapsed >= IDLE_SECS * 0.9, elapsed
    assert metric(process, "gateway_connections_timed_out_total", api="http", phase="idle") >= 1


def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(strict: tuple[GatewayProcess, Path]) -> None:
    process, _ = strict
    with connect(process.url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(20)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100_000):  # pipelined, never read: the answers fill the socket buffers
                sock.sendall(request)
    wait_until(lambda: metric(process, "gateway_connections_timed_out_total", api="http", phase="send") >= 1, 10)
    assert serving(process)


def test_a_slow_client_within_the_limits_is_served_and_its_event_kept(strict: tuple[GatewayProcess, Path]) -> None:
    process, data_dir = strict
    message_id = f"slow-{uuid.uuid4()}"
    body = f'{{"userId":"u","event":"Slow","messageId":"{message_id}"}}'.encode()
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    head = f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n"
    with connect(process.url) as sock:
        for piece in (head.encode(), f"Content-Length: {len(body)}\r\n\r\n".encode(), body[:20], body[20:]):
            sock.sendall(piece)
            time.sleep(HEAD_SECS / 5)  # the slow client under test, well within each limit
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    wait_until(lambda: any(m["messageId"] == message_id for m in read_jsonl(data_dir / "archive")))


def test_keep_alive_connections_are_reused(strict: tuple[GatewayProcess, Path]) -> None:
    process, _ = strict
    with connect(process.url) as sock:
        sock.settimeout(10)
        for _ in range(10):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                data = sock.recv(65536)
                assert data, "the connection was closed between requests"
                answer += data
            time.sleep(IDLE_SECS / 5)  # idle, but less than the keep-alive timeout
    with httpx.Client(base_url=process.url, auth=(WRITE_KEY, "")) as client:
        for i in range(10):
            assert client.post("/v1/track", json={"userId": "u", "event": f"E{i}"}).status_code == 200


# -- too many connections -----------------------------------------------------------------------


def answer_if(status: int, exchanged: tuple[bytes, bool]) -> bytes | None:
    answer = exchanged[0]
    return answer if answer.startswith(f"HTTP/1.1 {status} ".encode()) else None


def test_past_max_connections_a_client_gets_a_503_and_service_recovers(tmp_path: Path) -> None:
    process = start(tmp_path, "max_connections = 4\n")
    try:
        held = [connect(process.url) for _ in range(4)]
        # (Connections are accepted as the gateway gets to them: probe until the four are in.)
        answer = wait_until(lambda: answer_if(503, exchange(process.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"retry-after: 5" in head.lower() and b"connection: close" in head.lower()
        assert httpx.Response(503, content=body).json()["code"] == "too_many_connections"
        for sock in held:
            sock.close()
        wait_until(lambda: answer_if(200, exchange(process.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=1)))
        assert metric(process, "gateway_connections_refused_total", api="http") >= 1
        assert process.proc is not None and process.proc.poll() is None
    finally:
        process.kill()
