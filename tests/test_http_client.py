"""gateway.kit.http_client against real sockets: a trio server in the test writes each answer
byte for byte (chunked, up to the close, after a 100 Continue, gzipped, malformed), and the
client's connections are reused, replaced when the server closed them, and closed when a
request did not end."""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import struct
import subprocess
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway import DeliveryError, HttpDelivery
from gateway.kit import http_client
from gateway.kit.http_client import HttpClient, HttpClientError

#: What a scripted answer gets: the request's head and body; it returns the bytes to write and
#: whether to close the connection afterwards.
Script = Callable[[bytes, bytes], tuple[bytes, bool]]


class RawServer:
    """Answers each request on 127.0.0.1 with what ``script`` writes; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        with suppress(trio.BrokenResourceError):  # the client hung up (or refused our certificate)
            await self._answer(stream)

    async def _answer(self, stream: trio.abc.Stream) -> None:
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                answer, close = self.script(head, body)
                await stream.send_all(answer)
                if close:
                    return


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[RawServer]:
    server = RawServer(script)
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_keeps_the_connection_and_sends_headers_and_body() -> None:
    async with raw_server(lambda head, body: (ok(body), False)) as server:
        client = HttpClient({"User-Agent": "t"})
        try:
            for n in range(3):
                answer = await client.request("POST", f"http://127.0.0.1:{server.port}/p?q=1", {"X-N": str(n)}, b"hi")
                assert (answer.status_code, answer.content, answer.text) == (200, b"hi", "hi")
        finally:
            await client.aclose()
    assert server.connections == 1
    head = server.requests[2].split(b"\r\n")
    assert head[0] == b"POST /p?q=1 HTTP/1.1"
    assert {b"Host: 127.0.0.1:%d" % server.port, b"User-Agent: t", b"X-N: 2", b"Content-Length: 2"} <= set(head)


async def test_a_body_larger_than_the_socket_buffer_goes_out_whole() -> None:
    # Plain TCP is written on the socket directly: a body the kernel takes in several writes
    # waits for the socket to drain between them.
    body = bytes(range(256)) * 32768  # 8 MiB
    async with raw_server(lambda head, got: (ok(b"%d %d" % (len(got), got == body)), False)) as server:
        client = HttpClient({})
        try:
            for _ in range(2):
                answer = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, body)
                assert answer.content == b"%d 1" % len(body)
        finally:
            await client.aclose()
    assert server.connections == 1


async def test_the_answers_headers_read_as_httpx_headers() -> None:
    extra = b"Retry-After: 7\r\nX-Twice: a\r\nx-twice: b\r\n"
    async with raw_server(lambda head, body: (ok(b"{}", extra), False)) as server:
        client = HttpClient({})
        try:
            answer = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"")
        finally:
            await client.aclose()
    assert answer.headers["retry-after"] == "7" and answer.headers.get("X-TWICE") == "a, b"
    assert answer.headers.get_list("x-twice") == ["a", "b"] and answer.headers is answer.headers


CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{"a"\r\n3\r\n:1}\r\n0\r\nT: 1\r\n\r\n'


@pytest.mark.parametrize(
    ("answer", "content", "reusable"),
    [
        (CHUNKED, b'{"a":1}', True),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[]"), b"[]", True),
        (ok(gzip.compress(b'{"z":1}'), b"Content-Encoding: gzip\r\n"), b'{"z":1}', True),
        (ok(b"bye", b"Connection: close\r\n"), b"bye", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    ],
)
async def test_answer_forms(answer: bytes, content: bytes, reusable: bool) -> None:
    async with raw_server(lambda head, body: (answer, not reusable)) as server:
        client = HttpClient({})
        try:
            for _ in range(2):
                response = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
                assert response.content == content
        finally:
            await client.aclose()
    assert server.connections == (1 if reusable else 2)


async def test_a_body_up_to_the_close() -> None:
    async with raw_server(lambda head, body: (b"HTTP/1.1 200 OK\r\n\r\nall of it", True)) as server:
        client = HttpClient({})
        try:
            response = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"")
        finally:
            await client.aclose()
    assert (response.status_code, response.content) == (200, b"all of it")


async def test_a_connection_the_server_closed_is_replaced() -> None:
    # The server closes every connection after its answer without saying so (a keep-alive
    # timeout): the next request goes out on a new connection, never on the closed one.
    async with raw_server(lambda head, body: (ok(), True)) as server:
        client = HttpClient({})
        try:
            for _ in range(3):
                response = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"x")
                assert response.status_code == 200
        finally:
            await client.aclose()
    assert (server.connections, len(server.requests)) == (3, 3)


@pytest.mark.parametrize(
    "answer",
    [b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"HTTP/1.1 200 OK\r\n bad\r\n\r\n"],
)
async def test_no_whole_answer_is_an_error(answer: bytes) -> None:
    async with raw_server(lambda head, body: (answer, True)) as server:
        client = HttpClient({})
        try:
            with pytest.raises(HttpClientError):
                await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"")
        finally:
            await client.aclose()


async def test_a_header_with_a_line_break_is_refused() -> None:
    client = HttpClient({})
    with pytest.raises(ValueError, match="header"):
        await client.request("POST", "http://127.0.0.1:9/", {"X-A": "1\r\nX-Injected: 1"}, b"")


async def test_a_cancelled_request_does_not_leave_its_connection_to_the_next() -> None:
    answered = trio.Event()
    requests = 0

    def script(head: bytes, body: bytes) -> tuple[bytes, bool]:
        nonlocal requests
        requests += 1
        if requests == 1:  # the first answer is cut after its head: the caller gives up
            answered.set()
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart", False
        return ok(b"second"), False

    async with raw_server(script) as server:
        client = HttpClient({})
        url = f"http://127.0.0.1:{server.port}/"
        try:
            async with trio.open_nursery() as nursery:

                async def first() -> None:
                    await client.request("POST", url, {}, b"1")

                nursery.start_soon(first)
                await answered.wait()
                nursery.cancel_scope.cancel()
            response = await client.request("POST", url, {}, b"2")
        finally:
            await client.aclose()
    assert response.content == b"second"
    assert server.connections == 2


async def test_http_delivery_maps_a_broken_answer_to_a_retryable_connection_error() -> None:
    async with raw_server(lambda head, body: (b"garbage\r\n\r\n", True)) as server:
        http = HttpDelivery(secrets=["k3y"])
        try:
            with pytest.raises(DeliveryError) as raised:
                await http.post(f"http://127.0.0.1:{server.port}/?key=k3y", json={"a": 1})
        finally:
            await http.aclose()
    assert (raised.value.retryable, raised.value.kind) == (True, "connection")
    assert raised.value.exchange is not None and "k3y" not in raised.value.exchange.request


async def test_http_delivery_uses_httpx_behind_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    http = HttpDelivery()
    try:
        assert http._client is None and http._httpx is not None
    finally:
        await http.aclose()


async def test_a_request_the_server_closed_on_unanswered_goes_again_only_on_a_reused_connection() -> None:
    # 1: answered, the connection stays; 2: read, then closed without an answer (a keep-alive
    # timeout racing the request), so it goes again on a new connection: 3. On a new
    # connection the same close is an error: 4, with no fifth request.
    answers = iter([(ok(b"1"), False), (b"", True), (ok(b"3"), False), (b"", True)])
    async with raw_server(lambda head, body: next(answers)) as server:
        client = HttpClient({})
        url = f"http://127.0.0.1:{server.port}/"
        try:
            assert (await client.request("POST", url, {}, b"a")).content == b"1"
            assert (await client.request("POST", url, {}, b"b")).content == b"3"
            assert [request.rsplit(b"\r\n", 1)[-1] for request in server.requests] == [b"a", b"b", b"b"]
            await client.aclose()
            with pytest.raises(HttpClientError):
                await client.request("POST", url, {}, b"c")
        finally:
            await client.aclose()
    assert (server.connections, len(server.requests)) == (3, 4)


async def test_https_with_the_servers_certificate_checked(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: ASYNC221 (a one-off certificate before the servers start)
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)),
            *("-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = RawServer(lambda head, body: (ok(body), False))
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            partial(trio.serve_ssl_over_tcp, server.handle, 0, server_context, host="127.0.0.1")
        )
        port = listener.transport_listener.socket.getsockname()[1]
        trusting = HttpClient({}, ssl_context=ssl.create_default_context(cafile=str(cert)))
        strangers = HttpClient({})  # the default trust store does not know this certificate
        try:
            for n in range(2):
                answer = await trusting.request("POST", f"https://127.0.0.1:{port}/s", {}, b"tls %d" % n)
                assert answer.content == b"tls %d" % n
            with pytest.raises(HttpClientError, match="TLS"):
                await strangers.request("POST", f"https://127.0.0.1:{port}/s", {}, b"")
        finally:
            await trusting.aclose()
            await strangers.aclose()
        nursery.cancel_scope.cancel()
    assert len(server.requests) == 2 and server.connections == 2  # one kept for both, one refused


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"x" * 5000),
        CHUNKED.replace(b"0\r\nT: 1\r\n\r\n", b"1388\r\n" + b"x" * 5000 + b"\r\n0\r\n\r\n"),
        ok(gzip.compress(b"\0" * 5000), b"Content-Encoding: gzip\r\n"),
        ok(zlib.compress(b"\0" * 5000), b"Content-Encoding: deflate\r\n"),
    ],
)
async def test_an_answer_past_the_body_limit_is_an_error(answer: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # A confused or hostile server (an endless stream, a gzip bomb) must not fill the memory:
    # the body is refused once it grows past the limit, on the wire or once decompressed.
    monkeypatch.setattr(http_client, "MAX_BODY_BYTES", 4096)
    async with raw_server(lambda head, body: (answer, False)) as server:
        client = HttpClient({})
        try:
            with pytest.raises(HttpClientError, match="larger than"):
                await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"")
            monkeypatch.setattr(http_client, "MAX_BODY_BYTES", 8192)
            response = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"")
        finally:
            await client.aclose()
    assert 5000 <= len(response.content) <= 8192  # under the limit it passes whole


async def test_bytes_past_a_whole_answer_do_not_undo_it() -> None:
    # The server answered (the request was taken); junk after the answer only retires the
    # connection: reporting a failure would have the batch sent again.
    async with raw_server(lambda head, body: (ok() + b"junk\r\n", False)) as server:
        client = HttpClient({})
        try:
            for _ in range(2):
                response = await client.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"x")
                assert (response.status_code, response.content) == (200, b'{"ok":true}')
        finally:
            await client.aclose()
    assert (server.connections, len(server.requests)) == (2, 2)


@pytest.mark.parametrize("read_first", [True, False], ids=["after-the-request", "before-the-body"])
async def test_a_peer_reset_is_a_retryable_delivery_error(read_first: bool) -> None:
    # The server resets the connection (SO_LINGER 0): after reading the request (ECONNRESET on
    # the read) or before reading an 8 MiB body (EPIPE or ECONNRESET on the write). Plain TCP
    # is written and read with os.write/os.read: either is a retryable failure, never a crash.
    async def reset(stream: trio.SocketStream) -> None:
        if read_first:
            await stream.receive_some(65536)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, reset, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}/"
        http = HttpDelivery()
        try:
            for _ in range(2):
                with pytest.raises(DeliveryError) as raised:
                    await http.post(url, content=b"x" * (8 << 20))
                assert (raised.value.retryable, raised.value.kind) == (True, "connection")
        finally:
            await http.aclose()
        nursery.cancel_scope.cancel()


async def test_an_answer_sent_before_the_body_was_read_is_the_outcome() -> None:
    # A server refusing a large body answers 413 after the head and closes with the body
    # unread: the kernel resets the connection, so the write fails, but the answer is in the
    # receive buffer. It is the outcome (a destination splits the batch on 413), not a broken
    # connection retried forever with the same body. The second request comes after a small
    # one, on a reused connection.
    async def refuse_large(stream: trio.SocketStream) -> None:
        while True:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            if b"Content-Length: 2\r\n" in data:
                await stream.send_all(ok(b"small"))
                continue
            await stream.send_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\n\r\ntoo big")
            stream.socket.close()
            return

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, refuse_large, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}/"
        client = HttpClient({})
        try:
            answer = await client.request("POST", url, {}, b"x" * (8 << 20))
            assert (answer.status_code, answer.content) == (413, b"too big")
            assert (await client.request("POST", url, {}, b"ok")).content == b"small"
            answer = await client.request("POST", url, {}, b"x" * (8 << 20))
            assert (answer.status_code, answer.content) == (413, b"too big")
            assert (await client.request("POST", url, {}, b"ok")).content == b"small"  # not reused
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_request_cancelled_mid_write_leaves_no_connection_behind() -> None:
    # The first connection's server never reads: the 32 MiB body stalls in the kernel's buffers
    # and the caller gives up; the next requests go on a new connection, whole.
    accepted = trio.Event()
    connections = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        accepted.set()
        if connections == 1:
            await trio.sleep_forever()
        data = b""
        while not data.endswith(b"END"):
            data += await stream.receive_some(65536)
        await stream.send_all(ok(b"whole"))
        await stream.receive_some(65536)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}/"
        client = HttpClient({})
        try:
            async with trio.open_nursery() as requests:
                requests.start_soon(partial(client.request, "POST", url, {}, b"x" * (32 << 20) + b"END"))
                await accepted.wait()
                await trio.testing.wait_all_tasks_blocked()
                requests.cancel_scope.cancel()
            assert (await client.request("POST", url, {}, b"END")).content == b"whole"
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert connections == 2
