"""The floor for bench/ingest.py's ``/v1/batch``: a bare ASGI app on the gateway's HTTP stack
(hypercorn, trio) that does the least any Python gateway must do with a batch: decode it with
msgspec and encode every event once (what a log would store). It stores nothing, checks no
write key, adds no server fields. What the gateway reaches against it is what its validation,
dedup, durable log and books cost, per event.

    taskset -c 0 .venv/bin/hypercorn --worker-class trio --bind 127.0.0.1:8082 bench/floor_app.py:app
"""

from __future__ import annotations

from typing import Any

import msgspec

BODY = b'{"success":true}'
JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
BAD = b'{"success":false}'
BAD_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BAD)).encode())]


class Batch(msgspec.Struct):
    batch: list[dict[str, Any]]


_decode = msgspec.json.Decoder(Batch).decode
_encode = msgspec.json.Encoder().encode


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    try:
        encoded = [_encode(event) for event in _decode(b"".join(chunks)).batch]
    except msgspec.DecodeError:
        encoded = []
    status, headers, body = (200, JSON_HEADERS, BODY) if encoded else (400, BAD_HEADERS, BAD)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
