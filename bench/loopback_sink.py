"""The loopback sink of bench/destinations.py: answers every POST ``200 {"status":1,"success":true}``
(which every destination takes as success) after reading its whole body, and ``GET`` with how many
POSTs it answered.

An asyncio protocol with a minimal HTTP/1.1 reader (keep-alive, ``Content-Length`` bodies, pipelined
requests), not an ASGI app under hypercorn: hypercorn's trio worker answered 60-500 small requests a
second on the shared VM, so a destination that makes many small requests (GA4: one client's events
per request) measured the sink, not itself. This one answers tens of thousands; the ``http``
reference is measured against the same sink.

    python bench/loopback_sink.py PORT
"""

from __future__ import annotations

import asyncio
import sys

_BODY = b'{"status":1,"success":true}'
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
_LENGTH = b"\r\ncontent-length:"

answered = 0


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        global answered
        buffer = self._buffer
        buffer += data
        out = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[: end + 2]).lower()
            at = head.find(_LENGTH)
            length = int(head[at + len(_LENGTH) : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break  # the rest of the body is still on its way
            del buffer[: end + 4 + length]
            if head.startswith(b"get "):
                count = str(answered).encode()
                out.append(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(count), count))
            else:
                answered += 1
                out.append(_OK)
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Sink, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
