"""The tracking API's ASGI fast path (gateway.fastpath, mounted by gateway.web): plain server
calls are answered without Quart; everything else reaches the Quart routes with its body intact
and gets the answer the routes give."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.plugins import Registry
from tests.conftest import App, open_app
from tests.test_http import AUTH, post, stored

MESSAGE = {"type": "track", "userId": "u1", "event": "Clicked"}
ORIGIN = "http://shop.example"


@pytest.fixture
async def app(tmp_path: Path, registry: Registry) -> AsyncIterator[App]:
    """The app, with a count of the requests its Quart routes saw."""
    extra = f'allowed_origins = ["{ORIGIN}"]\nrate_limit_events_per_sec = 0.1\nrate_limit_burst = 4\n'
    async with open_app(tmp_path, registry, extra) as opened:
        opened.app.config["ROUTED"] = 0

        @opened.app.before_request
        async def routed() -> None:
            opened.app.config["ROUTED"] += 1

        yield opened


def routed(app: App) -> int:
    return int(app.app.config["ROUTED"])


def batch(*messages: dict[str, Any], prefix: str = "m") -> dict[str, Any]:
    return {"batch": [{**m, "messageId": f"{prefix}{i}"} for i, m in enumerate(messages)]}


async def test_plain_server_calls_skip_quart_and_are_stored(app: App) -> None:
    assert (await post(app, "/v1/batch", batch(MESSAGE, MESSAGE)))[:2] == (200, {"success": True})
    assert (await post(app, "/v1/t", {**MESSAGE, "messageId": "single"}))[:2] == (200, {"success": True})
    gzipped = gzip.compress(json.dumps(batch({**MESSAGE, "event": "Zipped"}, prefix="z")).encode())
    assert (await post(app, "/v1/import", gzipped, {"Content-Encoding": "gzip"}))[:2] == (200, {"success": True})

    assert routed(app) == 0
    messages = stored(app)
    assert [(m["messageId"], m["type"], m["event"]) for m in messages] == [
        ("m0", "track", "Clicked"),
        ("m1", "track", "Clicked"),
        ("single", "track", "Clicked"),
        ("z0", "track", "Zipped"),
    ]
    assert all(m["context"]["ip"] == "127.0.0.1" and "writeKey" not in m and m["receivedAt"] for m in messages)
    metrics = (await (await app.client().get("/metrics")).get_data()).decode()
    for path in ("/v1/batch", "/v1/<call>", "/v1/import"):
        assert f'gateway_http_requests_total{{path="{path}",status="200"}} 1.0' in metrics


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        # one bad item: the routes store the rest and list it
        ("/v1/batch", batch(MESSAGE, {"type": "track", "userId": "u2"}), {}, 200, None),
        ("/v1/batch", b"{not json", {}, 400, "invalid_json"),
        ("/v1/batch", batch(MESSAGE), {"Authorization": "Basic d3Jvbmc6"}, 401, "invalid_write_key"),
        ("/v1/track", {"userId": "u1"}, {}, 400, "event_not_defined"),
        ("/v1/track", {**MESSAGE, "timestamp": "yesterday"}, {}, 400, "timestamp_invalid"),
        ("/v1/batch", b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
        # a browser: CORS is the routes' business
        ("/v1/batch", batch(MESSAGE), {"Origin": ORIGIN}, 200, None),
    ],
)
async def test_what_the_fast_path_declines_gets_the_routes_answer(
    app: App, path: str, body: Any, headers: dict[str, str], status: int, code: str | None
) -> None:
    got_status, got_body, got_headers = await post(app, path, body, headers)
    assert routed(app) == 1  # declined, then answered by the routes from the replayed body
    assert got_status == status, got_body
    if code is not None:
        assert got_body["code"] == code
        assert stored(app) == []
    else:
        assert [m["messageId"] for m in stored(app)] == ["m0"]
    if "Origin" in headers:
        assert got_headers["Access-Control-Allow-Origin"] == ORIGIN
    elif status == 200:
        assert got_body["rejected"] == [{"index": 1, "code": "event_not_defined", "message": "event is required"}]


async def test_the_fast_path_and_the_routes_share_the_rate_limit(app: App) -> None:
    # burst 4, a token every 10 s: three events through the fast path, and a browser's batch of
    # two is over it (with separate limits it would pass)
    assert (await post(app, "/v1/batch", batch(MESSAGE, MESSAGE, MESSAGE)))[0] == 200
    status, body, headers = await post(app, "/v1/batch", batch(MESSAGE, MESSAGE, prefix="b"), {"Origin": ORIGIN})
    assert (status, body["code"], headers["Retry-After"]) == (429, "rate_limited", "10")
    # and the other way round: the routes took the last token, the fast path declines to the 429
    assert (await post(app, "/v1/t", {**MESSAGE, "messageId": "b"}, {"Origin": ORIGIN}))[0] == 200
    status, body, _ = await post(app, "/v1/t", {**MESSAGE, "messageId": "c"})
    assert (status, body["code"]) == (429, "rate_limited")
    assert routed(app) == 3
    assert [m["messageId"] for m in stored(app)] == ["m0", "m1", "m2", "b"]


async def call(app: App, path: str, chunks: Sequence[bytes], headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, Any]:
    """POST ``chunks`` as separate ASGI body messages (as hypercorn passes a body read in parts)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), *((b"authorization", AUTH["Authorization"].encode()),), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app.app(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body)


async def test_a_body_in_parts_is_joined_and_an_overlong_one_replayed(app: App) -> None:
    data = json.dumps(batch(MESSAGE, MESSAGE)).encode()
    parts = [data[:10], data[10:11], data[11:]]
    assert await call(app, "/v1/batch", parts, []) == (200, {"success": True})
    assert routed(app) == 0
    assert len(stored(app)) == 2

    # No Content-Length, more than the fast path reads: the routes read on and refuse it.
    limit = app.config.server.max_request_bytes
    status, body = await call(app, "/v1/batch", [b"x" * (limit // 2)] * 3, [])
    assert (status, body["code"]) == (400, "payload_too_large")
    assert routed(app) == 1
