"""The http destination against a real loopback HTTP server: body shape, headers, status mapping."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from gateway_destination_http import HttpConfig, HttpDestination, parse_retry_after
from hypercorn.config import Config
from hypercorn.trio import serve

from gateway import DeliveryError, DestinationContext, Record


class Sink:
    """A raw ASGI app that records requests and answers with a scripted status."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append({"headers": dict(scope["headers"]), "body": body})
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"nope" if self.status >= 300 else b"ok"})


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    app = Sink()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
        yield app, binds[0]
        nursery.cancel_scope.cancel()


def batch() -> list[Record]:
    return [
        Record(seq=i, source="web", body=json.dumps({"messageId": f"m{i}", "type": "track"}).encode()) for i in (1, 2)
    ]


async def test_posts_a_segment_batch_with_headers(sink: tuple[Sink, str], tmp_path: Any) -> None:
    app, url = sink
    config = HttpConfig(url=f"{url}/hook", headers={"Authorization": "Bearer t"})
    async with HttpDestination(config, DestinationContext("crm", tmp_path)) as dest:
        await dest.send(batch())
    [request] = app.requests
    body = json.loads(request["body"])
    assert [m["messageId"] for m in body["batch"]] == ["m1", "m2"]
    assert body["sentAt"].endswith("Z")
    assert request["headers"][b"authorization"] == b"Bearer t"
    assert request["headers"][b"content-type"] == b"application/json"


async def test_gzip_option(sink: tuple[Sink, str], tmp_path: Any) -> None:
    app, url = sink
    async with HttpDestination(HttpConfig(url=url, gzip=True), DestinationContext("crm", tmp_path)) as dest:
        await dest.send(batch())
    assert app.requests[0]["headers"][b"content-encoding"] == b"gzip"
    assert len(json.loads(gzip.decompress(app.requests[0]["body"]))["batch"]) == 2


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (408, True),
        (400, False),
        (401, False),
        (404, False),
        (413, False),
        (501, False),
        (301, False),
    ],
)
async def test_status_mapping(sink: tuple[Sink, str], tmp_path: Any, status: int, retryable: bool) -> None:
    app, url = sink
    app.status = status
    app.headers = [(b"retry-after", b"7")]
    async with HttpDestination(HttpConfig(url=url), DestinationContext("crm", tmp_path)) as dest:
        with pytest.raises(DeliveryError) as raised:
            await dest.send(batch())
    assert raised.value.retryable is retryable
    assert f"HTTP {status}" in str(raised.value)
    if retryable:
        assert raised.value.retry_after == 7


async def test_connection_refused_is_retryable(tmp_path: Any) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with HttpDestination(
        HttpConfig(url=f"http://127.0.0.1:{port}/"), DestinationContext("crm", tmp_path)
    ) as dest:
        with pytest.raises(DeliveryError) as raised:
            await dest.send(batch())
    assert raised.value.retryable


def test_retry_after_forms() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


async def test_deletion_notice_goes_to_delete_url(sink: tuple[Sink, str], tmp_path: Any) -> None:
    app, url = sink
    config = HttpConfig(url=f"{url}/hook", delete_url=f"{url}/delete", headers={"Authorization": "Bearer t"})
    async with HttpDestination(config, DestinationContext("crm", tmp_path)) as dest:
        assert await dest.delete_user("user-42") == 1
        app.status = 503
        with pytest.raises(DeliveryError) as raised:
            await dest.delete_user("user-43")
    assert raised.value.retryable and "HTTP 503" in str(raised.value)
    first = app.requests[0]
    assert json.loads(first["body"]) == {"type": "delete", "userId": "user-42"}
    assert first["headers"][b"authorization"] == b"Bearer t"


async def test_without_delete_url_nothing_is_sent(sink: tuple[Sink, str], tmp_path: Any) -> None:
    app, url = sink
    async with HttpDestination(HttpConfig(url=url), DestinationContext("crm", tmp_path)) as dest:
        assert await dest.delete_user("user-42") == 0
    assert app.requests == []


def test_delete_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="delete_url must be an http"):
        HttpConfig(url="http://h/x", delete_url="ftp://h/y")


async def test_a_refusal_carries_a_sample_of_the_exchange_without_credentials(
    sink: tuple[Sink, str], tmp_path: Any
) -> None:
    app, url = sink
    app.status = 400
    config = HttpConfig(url=url, headers={"X-Api-Key": "hook-secret-123", "X-Team": "team-secret-456"}, gzip=True)
    async with HttpDestination(config, DestinationContext("crm", tmp_path)) as dest:
        with pytest.raises(DeliveryError) as raised:
            await dest.send(batch())
    error = raised.value
    assert error.kind == "http_400"
    assert error.exchange is not None
    request, response = error.exchange.request, error.exchange.response
    assert request.startswith(f"POST {url}")
    assert '"batch":[' in request  # the body as sent, before gzip
    assert "hook-secret-123" not in request and "team-secret-456" not in request
    assert response.startswith("400")
