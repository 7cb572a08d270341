"""A lean HTTP/1.1 client on trio for :class:`gateway.HttpDelivery`: keep-alive connections per
origin, each request written in one send, the answer parsed by httptools (llhttp, Node's HTTP
parser, as uvicorn uses it): framing, chunks and keep-alive are a mature parser's, not ours.

Why not httpx: on the shared VM, httpx took 0.9-1.2 ms of CPU a request (its connection pool,
h11, its request and response models), this client 30-60 µs (bench/README.md, Destinations);
h11 alone (sans-IO, pure Python) took 170-250 µs, llhttp a few.
A destination posting batches of hundreds of events pays that per batch; GA4, which takes one
client's events per request, paid it every few events. TLS is trio's, with httpx's trust store
(certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``); proxies are httpx's job
(:class:`gateway.HttpDelivery` uses httpx when the environment names one).
"""

from __future__ import annotations

import json as _json
import os
import re
import select
import ssl
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import httptools
import httpx
import trio

#: An answer's head larger than this is refused (a confused server must not fill the memory).
MAX_HEAD_BYTES = 64 * 1024
#: An answer's body larger than this, as sent or decompressed, is refused (an endless stream or
#: a gzip bomb must not fill the memory; destinations' answers are a few kB).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Idle connections kept per origin.
MAX_IDLE_PER_ORIGIN = 100
_READ_BYTES = 65536
_CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
#: A header name is a token (RFC 9110, 5.6.2); a value holds no line break or NUL.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")


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
    ``headers``, ``content``, ``text``, ``json()``), and the request that got it.

    ``headers`` may be given as the answer's raw (name, value) fields: they become
    ``httpx.Headers`` when first read (most answers are taken by their status alone).
    """

    __slots__ = ("_fields", "_headers", "content", "request", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: httpx.Headers | Sequence[tuple[bytes, bytes]],
        content: bytes,
        request: SentRequest,
    ) -> None:
        self.status_code = status_code
        self._headers = headers if isinstance(headers, httpx.Headers) else None
        self._fields = headers
        self.content = content
        self.request = request

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self._fields)
        return self._headers

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


class _Answer:
    """The answer being parsed: httptools calls these as the bytes arrive. 1xx answers (100
    Continue, 103 Early Hints) are forgotten as they end: the real answer follows."""

    __slots__ = (
        "body",
        "body_bytes",
        "complete",
        "extra",
        "fields",
        "head_bytes",
        "headers_done",
        "keep_alive",
        "parser",
        "status",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.head_bytes = 0
        self.headers_done = False
        self.complete = False
        self.status = 0
        self.keep_alive = False
        self.extra = False  # bytes past the answer: no request asked for them

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise HttpClientError("the answer's head is too large")
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY_BYTES:
            raise HttpClientError(f"the answer's body is larger than {MAX_BODY_BYTES} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        # Read here: once the message ends, the parser's state is the next message's.
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.reset()
        else:
            self.complete = True
            self.status = status
            self.keep_alive = self.parser.should_keep_alive()

    def delimited_by_close(self) -> bool:
        """Whether the body runs up to the close (no Content-Length, not chunked)."""
        names = {name.lower() for name, _ in self.fields}
        return b"content-length" not in names and b"transfer-encoding" not in names


class _Connection:
    """A keep-alive connection. Plain TCP is written and read on its socket directly: a small
    request is one ``write(2)``, its answer one wait for the socket to be readable and one
    ``read(2)``, with no pass through trio's stream layers or scheduler in between (trio's
    ``send_all`` and ``receive_some`` yield to the scheduler after each call, and read once
    before waiting). TLS goes through trio's ``SSLStream``."""

    __slots__ = ("answer", "fd", "poller", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType, *, plain: bool) -> None:
        self.stream = stream
        self.socket = socket
        self.fd = socket.fileno() if plain else -1
        self.answer = _Answer()
        self.poller: select.poll | None = None  # for looks_closed(), registered once

    async def send_all(self, data: bytes) -> None:
        if self.fd < 0:
            await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.socket)

    async def receive_some(self) -> bytes | bytearray:
        if self.fd < 0:
            return await self.stream.receive_some(_READ_BYTES)
        while True:
            await trio.lowlevel.wait_readable(self.socket)
            try:
                return os.read(self.fd, _READ_BYTES)
            except BlockingIOError:
                continue

    def looks_closed(self) -> bool:
        """Whether an idle connection has something to read: the server closed it (or sent
        what no request asked for); either way it cannot carry a request."""
        try:
            if self.poller is None:  # poll, not select(): it refuses descriptors past 1,023
                self.poller = select.poll()
                self.poller.register(self.socket.fileno(), select.POLLIN)
            return bool(self.poller.poll(0))
        except (OSError, ValueError):
            return True


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
        self._fields: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], bytes]] = {}
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        origin = self._origin(method, url)
        sent_headers, fields = self._header_fields(headers)
        wire = b"%s%sContent-Length: %d\r\n\r\n%s" % (origin.head, fields, len(body), body)
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

    def _header_fields(self, headers: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
        """The headers a request sends (the client's, then ``headers``; read-only) and their
        lines, checked and encoded once per distinct ``headers``: a destination sends the same
        few with every request."""
        key = tuple(headers.items())
        found = self._fields.get(key)
        if found is not None:
            return found
        sent_headers = {**self._headers, **headers}
        for name, value in sent_headers.items():
            if not _NAME.fullmatch(name) or _BAD_VALUE.search(value):
                raise ValueError(f"a header that cannot be sent: {name!r}")
        fields = "".join(f"{name}: {value}\r\n" for name, value in sent_headers.items()).encode("ascii")
        if len(self._fields) >= 256:
            self._fields.clear()
        found = self._fields[key] = (sent_headers, fields)
        return found

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
            return _Connection(tcp, tcp.socket, plain=True)
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
        return _Connection(stream, tcp.socket, plain=False)

    async def _exchange(
        self, connection: _Connection, key: tuple[str, int, bool], wire: bytes, sent: SentRequest, *, reused: bool
    ) -> HttpResponse:
        keep = False
        try:
            try:
                await connection.send_all(wire)
            except _CONNECTION_ERRORS as error:
                early = await _early_answer(connection)
                if early is None:
                    if reused:
                        raise _Unanswered from error
                    raise HttpClientError(f"{type(error).__name__}: {error}") from error
                status, headers, body, keep = early
            else:
                status, headers, body, keep = await _read_answer(connection, reused=reused)
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


async def _early_answer(connection: _Connection) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool] | None:
    """The whole answer a server sent before it stopped reading the request, if it sent one.

    A server refusing a body (413, 401) may answer after the head and close the connection
    with the body unread, so the write fails (the kernel resets a connection closed with
    unread data) while the answer waits in the receive buffer: the answer is the outcome,
    not the broken write (curl and httpx read it too). The connection is never reused.

    Plain TCP only: trio's ``SSLStream`` refuses to read once a write failed, so over TLS
    the broken write stays the outcome (a retryable connection error)."""
    try:
        status, headers, body, _ = await _read_answer(connection, reused=False)
    except (HttpClientError, *_CONNECTION_ERRORS):
        return None
    return status, headers, body, False


async def _read_answer(connection: _Connection, *, reused: bool) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """(status, headers, body, whether the connection may carry another request) of the answer
    to the request just sent. On a reused connection, a close before any byte of an answer
    raises :class:`_Unanswered`."""
    answer = connection.answer
    answer.reset()
    started = False  # a byte of the answer came: the request was received
    while not answer.complete:
        try:
            data = await connection.receive_some()
        except _CONNECTION_ERRORS as error:
            if reused and not started:
                raise _Unanswered from error
            raise HttpClientError(f"{type(error).__name__}: {error}") from error
        if not data:
            if reused and not started:
                raise _Unanswered
            if answer.headers_done and answer.delimited_by_close():
                break  # the body ran up to the close, as it said
            raise HttpClientError("the server closed the connection before a whole answer")
        started = True
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise HttpClientError("the server switched protocols") from None
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, HttpClientError):  # raised by a callback
                raise error.__context__ from None
            if answer.complete:  # junk after a whole answer: it stands, the connection goes
                answer.extra = True
                break
            raise HttpClientError(f"not an HTTP/1.x answer: {error}") from None
    keep = answer.complete and not answer.extra and answer.keep_alive
    body = b"".join(answer.body)
    if body:
        encodings = [value for name, value in answer.fields if name.lower() == b"content-encoding"]
        if encodings:  # httpx.Headers' get() of a repeated field: its values joined by ", "
            body = _decoded(body, b", ".join(encodings).decode("latin-1"))
    return answer.status or answer.parser.get_status_code(), answer.fields, body, keep


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without its ``Content-Encoding`` (none is asked for; a server may use one anyway)."""
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return _inflated(body, 47)
        if encoding == "deflate":
            try:
                return _inflated(body, 15)
            except zlib.error:
                return _inflated(body, -15)
    except zlib.error as error:
        raise HttpClientError(f"an undecodable {encoding} body: {error}") from error
    return body


def _inflated(body: bytes, wbits: int) -> bytes:
    """``body`` decompressed, at most :data:`MAX_BODY_BYTES` of it."""
    inflater = zlib.decompressobj(wbits)
    inflated = inflater.decompress(body, MAX_BODY_BYTES + 1)
    if len(inflated) > MAX_BODY_BYTES:
        raise HttpClientError(f"the answer's body is larger than {MAX_BODY_BYTES} bytes decompressed")
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return inflated
