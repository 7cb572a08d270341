"""The baseline for bench/ingest.py and bench/pixel.py: a bare ASGI app with no framework,
parsing or storage. It reads the whole request and answers a POST with ``{"success":true}`` and a
GET with the 1x1 GIF of the gateway's Pixel API (same bytes, same ``Cache-Control``).

Serve it the way the benchmarks do::

    taskset -c 0 .venv/bin/hypercorn --worker-class trio --bind 127.0.0.1:8081 bench/bare_app.py:app
"""

from __future__ import annotations

import base64
from typing import Any

BODY = b'{"success":true}'
JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
# The gateway's GIF (gateway_source_tracking_api/_pixel.py): the smallest transparent 1x1 GIF.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
GIF_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-cache, no-store, must-revalidate"),
]


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
    while more:  # a GET has no body: one empty http.request
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    _request = b"".join(chunks) or scope["query_string"]  # a real app would parse this
    headers, body = (GIF_HEADERS, GIF) if scope["method"] == "GET" else (JSON_HEADERS, BODY)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
