"""The baseline for bench/ingest.py: a bare ASGI app that reads the whole body and answers
``{"success":true}``, with no framework, parsing or storage.

Serve it the way the benchmark does::

    taskset -c 0 .venv/bin/hypercorn --worker-class trio --bind 127.0.0.1:8081 bench/bare_app.py:app
"""

from __future__ import annotations

from typing import Any

BODY = b'{"success":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


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
    _body = b"".join(chunks)  # a real app would parse this
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
