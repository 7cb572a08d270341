"""The baseline for bench/pixel.py: a bare ASGI app that answers every request with the 1x1 GIF
the gateway's Pixel API sends (same bytes, same ``Cache-Control``), with no framework, parsing
or storage.

Serve it the way the benchmark does::

    taskset -c 0 .venv/bin/hypercorn --worker-class trio --bind 127.0.0.1:8081 bench/bare_gif_app.py:app
"""

from __future__ import annotations

import base64
from typing import Any

# The gateway's GIF (gateway_source_tracking_api/_pixel.py): the smallest transparent 1x1 GIF.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
HEADERS = [
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
    more = True
    while more:  # a GET has no body: one empty http.request
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    _query = scope["query_string"]  # a real app would decode data= here
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": GIF})
