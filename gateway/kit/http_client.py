"""A lean HTTP/1.1 client on trio for :class:`gateway.HttpDelivery`: keep-alive connections per
origin, each request written in one send, the answer read by hand.

Why not httpx: on the shared VM, httpx took 0.9-1.2 ms of CPU a request (its connection pool,
h11, its request and response models), this client 30-60 µs (bench/README.md, Destinations).
A destination posting batches of hundreds of events pays that per batch; GA4, which takes one
client's events per request, paid it every few events. TLS is trio's, with httpx's trust store
(certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``); proxies are httpx's job
(:class:`gateway.HttpDelivery` uses httpx when the environment names one).
"""

from __future__ import annotations

import json as _json
import select
import ssl
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import httpx
import trio

#: An answer's head larger than this is refused (a confused server must not fill the memory).
MAX_HEAD_BYTES = 64 * 1024
#: Idle connections kept per origin.
MAX_IDLE_PER_ORIGIN = 100
_READ_BYTES = 65536
_CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
#: Characters a header name may not hold.
_FORBIDDEN = frozenset(":\r\n \t")


class HttpClientError(Exception):
    """No usable answer: the connection failed or closed, or the answer was not HTTP/1.x."""


class SentRequest(NamedTuple):
    """A request as it went out, for samples: the attributes of ``httpx.Request`` they read."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes


class HttpResponse:
    """An answer: what destinations read of an ``httpx.Response`` (``status_code``,
    ``headers``, ``content``, ``text``, ``json()``), and the request that got it."""

    __slots__ = ("content", "headers", "request", "status_code")

    def __init__(self, status_code: int, headers: httpx.Headers, content: bytes, request: SentRequest) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.request = request

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON (``ValueError`` when it is not JSON)."""
        return _json.loads(self.content)


class _Origin(NamedTuple):
    """What a URL gives a request: where to connect, and the start of the request head."""

    secure: bool
    host: str
    port: int
    head: bytes  # b"POST /path?query HTTP/1.1\r\nHost: ...\r\n"


class _Connection:
    __slots__ = ("buffer", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        self.buffer = bytearray()

    def looks_closed(self) -> bool:
        """Whether an idle connection has something to read: the server closed it (or sent
        what no request asked for); either way it cannot carry a request."""
        try:
            readable, _, _ = select.select([self.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class HttpClient:
    """Pooled keep-alive HTTP/1.1 connections, one pool per origin.

    Resource handling:
        Connections stay open between requests (at most :data:`MAX_IDLE_PER_ORIGIN` idle per
        origin); :meth:`aclose` closes them. A request that did not end with a whole answer
        (cancelled by the caller's timeout, failed) closes its connection.

    Error handling:
        :meth:`request` raises :class:`HttpClientError` when no whole answer came. A request
        on a reused connection that the server closed before answering (its keep-alive ran
        out) is sent once more on a new connection.
    """

    def __init__(self, headers: Mapping[str, str], ssl_context: ssl.SSLContext | None = None) -> None:
        self._headers = dict(headers)
        self._ssl_context = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        origin = self._origin(method, url)
        sent_headers = {**self._headers, **headers}
        for name, value in sent_headers.items():
            if not name or _FORBIDDEN.intersection(name) or "\r" in value or "\n" in value:
                raise ValueError(f"a header that cannot be sent: {name!r}")
        fields = "".join(f"{name}: {value}\r\n" for name, value in sent_headers.items()).encode("ascii")
        wire = origin.head + fields + b"Content-Length: %d\r\n\r\n" % len(body) + body
        sent = SentRequest(method, url, sent_headers, body)
        key = (origin.host, origin.port, origin.secure)
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.looks_closed():
                await trio.aclose_forcefully(connection.stream)
                continue
            try:
                return await self._exchange(connection, key, wire, sent, reused=True)
            except _Unanswered:
                break  # closed before it answered: once more, on a new connection (only once)
        return await self._exchange(await self._connect(origin), key, wire, sent, reused=False)

    def _origin(self, method: str, url: str) -> _Origin:
        found = self._origins.get(url)
        if found is not None and found.head.startswith(method.encode() + b" "):
            return found
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        secure = parsed.scheme == "https"
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), parsed.raw_path, parsed.netloc)
        found = _Origin(secure, parsed.host, parsed.port or (443 if secure else 80), head)
        if len(self._origins) >= 256:
            self._origins.clear()
        self._origins[url] = found
        return found

    async def _connect(self, origin: _Origin) -> _Connection:
        try:
            tcp = await trio.open_tcp_stream(origin.host, origin.port)
        except OSError as error:
            raise HttpClientError(f"{type(error).__name__}: {error}") from error
        if not origin.secure:
            return _Connection(tcp, tcp.socket)
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=origin.host, https_compatible=True)
        try:
            await stream.do_handshake()
        except BaseException as error:
            await trio.aclose_forcefully(stream)
            if isinstance(error, trio.BrokenResourceError):
                raise HttpClientError(f"TLS handshake failed: {error.__cause__ or error}") from error
            raise
        return _Connection(stream, tcp.socket)

    async def _exchange(
        self, connection: _Connection, key: tuple[str, int, bool], wire: bytes, sent: SentRequest, *, reused: bool
    ) -> HttpResponse:
        keep = False
        try:
            try:
                await connection.stream.send_all(wire)
            except _CONNECTION_ERRORS as error:
                if reused:
                    raise _Unanswered from error
                raise HttpClientError(f"{type(error).__name__}: {error}") from error
            status, headers, body, keep = await _read_answer(connection, reused=reused, head=sent.method == "HEAD")
            keep = keep and not connection.buffer  # bytes no request asked for: not to be taken as an answer
        finally:
            if keep:
                idle = self._idle.setdefault(key, [])
                if len(idle) < MAX_IDLE_PER_ORIGIN:
                    idle.append(connection)
                else:
                    keep = False
            if not keep:
                await trio.aclose_forcefully(connection.stream)
        return HttpResponse(status, headers, body, sent)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await trio.aclose_forcefully(connection.stream)


class _Unanswered(Exception):
    """A reused connection closed before any byte of an answer: the request may go again."""


async def _receive(connection: _Connection, *, reused: bool, started: bool) -> None:
    """Read more of the answer into the connection's buffer."""
    try:
        data = await connection.stream.receive_some(_READ_BYTES)
    except _CONNECTION_ERRORS as error:
        if reused and not started:
            raise _Unanswered from error
        raise HttpClientError(f"{type(error).__name__}: {error}") from error
    if not data:
        if reused and not started:
            raise _Unanswered
        raise HttpClientError("the server closed the connection before a whole answer")
    connection.buffer += data


async def _read_answer(connection: _Connection, *, reused: bool, head: bool) -> tuple[int, httpx.Headers, bytes, bool]:
    """(status, headers, body, whether the connection may carry another request) of the next
    answer: 1xx answers skipped, the body by ``Content-Length``, chunks, or up to the close."""
    buffer = connection.buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise HttpClientError("the answer's head is too large")
            await _receive(connection, reused=reused, started=bool(buffer))
            end = buffer.find(b"\r\n\r\n")
        lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(b" ")
        status_text = rest[:3]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or not status_text.isdigit():
            raise HttpClientError(f"not an HTTP/1.x answer: {lines[0][:100]!r}")
        status = int(status_text)
        fields = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                raise HttpClientError(f"a malformed header line: {line[:100]!r}")
            fields.append((name, value.strip()))
        reused = False  # an answer began: whatever happens now, the request was received
        if 100 <= status < 200:
            continue  # 100 Continue, 103 Early Hints: the answer follows
        headers = httpx.Headers(fields)
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        keep = version == b"HTTP/1.1" and "close" not in tokens
        if head or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunks(connection)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise HttpClientError(f"a bad Content-Length: {length[:40]!r}")
            body = await _read_exactly(connection, int(length))
        else:  # the body runs up to the close
            while True:
                try:
                    data = await connection.stream.receive_some(_READ_BYTES)
                except _CONNECTION_ERRORS as error:
                    raise HttpClientError(f"{type(error).__name__}: {error}") from error
                if not data:
                    break
                buffer += data
            body, keep = bytes(buffer), False
            buffer.clear()
        return status, headers, _decoded(body, headers.get("content-encoding", "")), keep


async def _read_exactly(connection: _Connection, length: int) -> bytes:
    buffer = connection.buffer
    while len(buffer) < length:
        await _receive(connection, reused=False, started=True)
    body = bytes(buffer[:length])
    del buffer[:length]
    return body


async def _read_chunks(connection: _Connection) -> bytes:
    buffer = connection.buffer
    parts: list[bytes] = []
    while True:
        end = buffer.find(b"\r\n")
        while end < 0:
            await _receive(connection, reused=False, started=True)
            end = buffer.find(b"\r\n")
        size_text = bytes(buffer[:end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpClientError(f"a bad chunk size: {size_text[:40]!r}") from None
        del buffer[: end + 2]
        if size == 0:  # the last chunk, then trailers up to an empty line
            while True:
                end = buffer.find(b"\r\n")
                while end < 0:
                    await _receive(connection, reused=False, started=True)
                    end = buffer.find(b"\r\n")
                del buffer[: end + 2]
                if end == 0:
                    return b"".join(parts)
        parts.append(await _read_exactly(connection, size))
        if (await _read_exactly(connection, 2)) != b"\r\n":
            raise HttpClientError("a chunk without its line end")


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without its ``Content-Encoding`` (none is asked for; a server may use one anyway)."""
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, wbits=47)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, wbits=-15)
    except zlib.error as error:
        raise HttpClientError(f"an undecodable {encoding} body: {error}") from error
    return body
