"""The tracking API's ASGI fast path (gateway.http.fastpath, mounted by gateway.http.app): plain server
calls are answered without Quart; everything else reaches the Quart routes with its body intact
and gets the answer the routes give."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from gateway.errors import LogUnavailableError
from gateway.http.app import FAST_BODY_TIMEOUT_SECS, mount_fast_paths
from gateway.http.fastpath import FastRequest, Send, send_json
from gateway.plugins import Registry
from tests.conftest import App, open_app
from tests.gatewayproc import WRITE_KEY
from tests.test_http import AUTH, post, stored

MESSAGE = {"type": "track", "userId": "u1", "event": "Clicked"}
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Vary",
)
ORIGIN = "http://shop.example"
OTHER_ORIGIN = "http://evil.example"


@pytest.fixture
async def app(tmp_path: Path, registry: Registry) -> AsyncIterator[App]:
    """The app, with a count of the requests its Quart routes saw."""
    extra = f'allowed_origins = ["{ORIGIN}"]\nrate_limit_events_per_sec = 0.1\nrate_limit_burst = 5\n'
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
    # analytics.js: text/plain, the key in the body, from a page the source allows
    browser = {**MESSAGE, "writeKey": WRITE_KEY, "messageId": "page"}
    status, body, headers = await post(app, "/v1/t", browser, {"Authorization": "", "Origin": ORIGIN})
    assert (status, body) == (200, {"success": True})
    assert {name: headers[name] for name in CORS_HEADERS} == {
        "Access-Control-Allow-Origin": ORIGIN,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "Retry-After, X-RateLimit-Reset",
        "Vary": "Origin",
    }

    assert routed(app) == 0
    messages = await stored(app)
    assert [(m["messageId"], m["type"], m["event"]) for m in messages] == [
        ("m0", "track", "Clicked"),
        ("m1", "track", "Clicked"),
        ("single", "track", "Clicked"),
        ("z0", "track", "Zipped"),
        ("page", "track", "Clicked"),
    ]
    assert all(m["context"]["ip"] == "127.0.0.1" and "writeKey" not in m and m["receivedAt"] for m in messages)
    metrics = (await (await app.client().get("/metrics")).get_data()).decode()
    for path, count in (("/v1/batch", 1), ("/v1/<call>", 2), ("/v1/import", 1)):
        assert f'gateway_http_requests_total{{path="{path}",status="200"}} {count}.0' in metrics


async def test_preflights_and_telemetry_skip_quart(app: App) -> None:
    for path in ("/v1/t", "/v1/batch", "/v1/m"):
        response = await app.client().open(path, method="OPTIONS", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert (await post(app, "/v1/m", {"series": [{"type": "Counter"}]}))[:2] == (200, {"success": True})
    assert routed(app) == 0


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
        # a page the source does not allow: 403, and no CORS headers
        ("/v1/batch", batch(MESSAGE), {"Origin": OTHER_ORIGIN}, 403, "origin_not_allowed"),
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
        assert (await stored(app)) == []
    else:
        assert [m["messageId"] for m in (await stored(app))] == ["m0"]
    if "Origin" in headers:
        assert "Access-Control-Allow-Origin" not in got_headers
    elif status == 200:
        assert got_body["rejected"] == [{"index": 1, "code": "event_not_defined", "message": "event is required"}]


async def test_the_fast_path_and_the_routes_share_the_rate_limit(app: App) -> None:
    # burst 5, a token every 10 s: four events through the fast path, and a batch for the routes
    # (one bad item) with two good ones is over it (with separate limits it would pass)
    assert (await post(app, "/v1/batch", batch(MESSAGE, MESSAGE, MESSAGE, MESSAGE)))[0] == 200
    bad = {"type": "track", "userId": "u2"}
    status, body, headers = await post(app, "/v1/batch", batch(MESSAGE, MESSAGE, bad, prefix="r"))
    assert (status, body["code"], headers["Retry-After"]) == (429, "rate_limited", "10")
    # and the other way round: the routes take the last token, the fast path declines to the 429
    assert (await post(app, "/v1/batch", batch(MESSAGE, bad, prefix="r")))[:2] == (
        200,
        {"success": True, "rejected": [{"index": 1, "code": "event_not_defined", "message": "event is required"}]},
    )
    status, body, _ = await post(app, "/v1/t", {**MESSAGE, "messageId": "c"})
    assert (status, body["code"]) == (429, "rate_limited")
    assert routed(app) == 3
    assert [m["messageId"] for m in (await stored(app))] == ["m0", "m1", "m2", "m3", "r0"]


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
    assert len(await stored(app)) == 2

    # No Content-Length, more than the fast path reads: the routes read on and refuse it.
    limit = app.config.server.max_request_bytes
    status, body = await call(app, "/v1/batch", [b"x" * (limit // 2)] * 3, [])
    assert (status, body["code"]) == (400, "payload_too_large")
    assert routed(app) == 1


async def test_a_batch_over_one_sources_limit_takes_no_tokens_from_the_others(
    tmp_path: Path, registry: Registry
) -> None:
    extra = (
        "rate_limit_events_per_sec = 0.1\nrate_limit_burst = 4\n"
        '[sources.other]\nwrite_key = "other-key"\nrate_limit_events_per_sec = 0.05\nrate_limit_burst = 1\n'
    )
    async with open_app(tmp_path, registry, extra) as app:
        no_header = {"Authorization": ""}
        assert (await post(app, "/v1/t", {**MESSAGE, "writeKey": "other-key", "messageId": "o"}, no_header))[0] == 200
        mixed = batch(*[{**MESSAGE, "writeKey": key} for key in (WRITE_KEY, WRITE_KEY, "other-key")])
        status, body, headers = await post(app, "/v1/batch", mixed, no_header)
        assert (status, body.get("code")) == (429, "rate_limited"), body
        assert (body["message"], headers["Retry-After"]) == ("this source accepts 0.05 events/s", "20")  # other's
        # web's four tokens are all still there: had the refused batch taken two, this would be a 429
        assert (await post(app, "/v1/batch", batch(MESSAGE, MESSAGE, MESSAGE, MESSAGE, prefix="w")))[0] == 200
        assert [m["messageId"] for m in (await stored(app))] == ["o", "w0", "w1", "w2", "w3"]


async def test_an_invalid_single_call_takes_no_token(app: App) -> None:
    # One rule for single calls and batch items: what fails validation is refused for good
    # (400, never sent again) and takes nothing from the rate limit.
    bad = {**MESSAGE, "timestamp": "yesterday"}
    assert (await post(app, "/v1/track", bad))[1]["code"] == "timestamp_invalid"
    statuses = [(await post(app, "/v1/track", {**MESSAGE, "messageId": f"v{i}"}))[0] for i in range(6)]
    assert statuses == [200, 200, 200, 200, 200, 429]  # burst 5, none spent above
    # Past the limit, an invalid call is still a 400: a 429 would only make the client send it again.
    assert (await post(app, "/v1/track", bad))[1]["code"] == "timestamp_invalid"


# -- the middleware's contract (gateway.http.app.mount_fast_paths), with a fast path of its own ------


class StubPath:
    """Claims POST /stub; answers 201 with what it was offered, or behaves as ``mode`` says."""

    headers = frozenset({b"x-mode"})

    def __init__(self) -> None:
        self.offered: list[tuple[bytes, dict[str, str]]] = []

    def route(self, method: str, path: str) -> str | None:
        return "/stub" if (method, path) == ("POST", "/stub") else None

    def max_body_bytes(self) -> int:
        return 10

    def error_headers(self, request: FastRequest) -> list[tuple[bytes, bytes]]:
        return [(b"x-mode-was", request.headers.get("x-mode", "").encode())]

    async def answer(self, request: FastRequest, body: bytes, send: Send) -> bool:
        self.offered.append((body, request.headers))
        mode = request.headers.get("x-mode", "answer")
        if mode == "fail":
            raise RuntimeError("a bug")
        if mode == "unavailable":
            raise LogUnavailableError("log_full", "the log is full")
        if mode == "decline":
            return False
        await send_json(send, 201, body)
        return mode != "send-then-decline"


class Exchange:
    """One request through the middleware: what the inner app got, and what was sent."""

    def __init__(self, chunks: Sequence[dict[str, Any]]) -> None:
        self.chunks = list(chunks)
        self.pulled = 0
        self.inner: list[dict[str, Any]] | None = None  # messages the inner app read; None: not called
        self.pulled_before_inner = -1
        self.inner_at = -1.0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.chunks:
            await trio.sleep_forever()
        self.pulled += 1
        return self.chunks.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def inner_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.pulled_before_inner = self.pulled
        self.inner_at = trio.current_time()
        self.inner = []
        while True:
            message = await receive()
            self.inner.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                return


def body_messages(*parts: bytes) -> list[dict[str, Any]]:
    return [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]


async def through(app: App, exchange: Exchange, headers: Sequence[tuple[bytes, bytes]] = ()) -> StubPath:
    stub = StubPath()
    dispatch = mount_fast_paths(exchange.inner_app, [stub], app.hub)
    scope = {"type": "http", "method": "POST", "path": "/stub", "headers": list(headers), "client": ("10.0.0.1", 1)}
    await dispatch(scope, exchange.receive, exchange.send)
    return stub


async def test_the_middleware_offers_the_whole_body_and_counts_the_answer(gateway_app: App) -> None:
    exchange = Exchange(body_messages(b"ab", b"", b"cd"))
    stub = await through(gateway_app, exchange, [(b"x-mode", b"answer"), (b"x-mode", b"second"), (b"other", b"x")])
    assert stub.offered == [(b"abcd", {"x-mode": "answer"})]  # only the wanted headers, the first value
    assert exchange.inner is None
    assert [m.get("status") for m in exchange.sent] == [201, None]
    assert gateway_app.hub.metrics.requests.labels("/stub", "201")._value.get() == 1


@pytest.mark.parametrize(
    ("messages", "headers", "pulled", "offered"),
    [
        # declined: the inner app reads the same body
        (body_messages(b"ab", b"cd"), [(b"x-mode", b"decline")], 2, True),
        # Content-Length over the limit: nothing read, nothing offered
        (body_messages(b"0123456789", b"x"), [(b"content-length", b"11")], 0, False),
        (body_messages(b"{}"), [(b"content-length", b"2, 2")], 0, False),
        # no Content-Length, more than the limit: reading stops past it, the rest is read by the app
        (body_messages(b"0123", b"4567", b"89ab", b"cdef", b"ghij"), [], 3, False),
        # the client went away half way
        ([*body_messages(b"ab", b"cd")[:1], {"type": "http.disconnect"}], [], 2, False),
    ],
)
async def test_what_is_not_answered_reaches_the_app_as_it_was_sent(
    gateway_app: App, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]], pulled: int, offered: bool
) -> None:
    exchange = Exchange(messages)
    stub = await through(gateway_app, exchange, headers)
    assert exchange.pulled_before_inner == pulled
    assert exchange.inner == messages
    assert bool(stub.offered) == offered
    assert exchange.sent == []


@pytest.mark.parametrize(("mode", "code"), [("fail", "internal_error"), ("unavailable", "log_full")])
async def test_a_fast_path_that_raises_gets_the_apps_503(gateway_app: App, mode: str, code: str) -> None:
    exchange = Exchange(body_messages(b"{}"))
    await through(gateway_app, exchange, [(b"x-mode", mode.encode())])
    assert exchange.inner is None
    start, body = exchange.sent
    assert start["status"] == 503
    assert (b"retry-after", str(gateway_app.config.server.retry_after_secs).encode()) in start["headers"]
    assert (b"x-mode-was", mode.encode()) in start["headers"]  # the fast path's error headers
    assert json.loads(body["body"])["code"] == code


async def test_a_fast_path_may_not_decline_after_it_began_to_answer(gateway_app: App) -> None:
    exchange = Exchange(body_messages(b"{}"))
    with pytest.raises(RuntimeError, match="declined a request it had begun to answer"):
        await through(gateway_app, exchange, [(b"x-mode", b"send-then-decline")])
    assert exchange.inner is None


async def test_a_slow_body_goes_to_the_app_after_the_fast_paths_wait(gateway_app: App, autojump_clock: Any) -> None:
    first = body_messages(b"ab", b"cd")[0]  # and then nothing more
    exchange = Exchange([first])
    start = trio.current_time()
    with trio.move_on_after(60):
        await through(gateway_app, exchange)
    assert exchange.inner_at - start == pytest.approx(FAST_BODY_TIMEOUT_SECS)
    assert exchange.pulled_before_inner == 1
    assert exchange.inner == [first]  # the app got what was read, and waits for the rest itself


# -- parity: the same requests, with the fast path and with the routes alone --------------------

NO_KEY = {"Authorization": ""}
PARITY_CASES: dict[str, tuple[str, Any, dict[str, str]]] = {
    "batch": ("/v1/batch", batch(MESSAGE, {**MESSAGE, "type": "identify", "traits": {"a": 1}}), {}),
    "batch with root fields": (
        "/v1/b",
        {**batch(MESSAGE), "context": {"library": {"name": "x"}}, "sentAt": "2024-05-01T12:00:00Z"},
        {},
    ),
    "per-item keys": ("/v1/import", batch({**MESSAGE, "writeKey": WRITE_KEY}), NO_KEY),
    "root key": ("/v1/batch", {**batch(MESSAGE), "writeKey": WRITE_KEY}, NO_KEY),
    "single": ("/v1/identify", {"userId": "u", "traits": {"x": 1}, "messageId": "s"}, {}),
    "short single": ("/v1/p", {"anonymousId": "a", "name": "Home", "messageId": "s"}, {}),
    "forwarded for": ("/v1/t", {**MESSAGE, "messageId": "s"}, {"X-Forwarded-For": "203.0.113.9"}),
    "allowed origin": ("/v1/t", {**MESSAGE, "writeKey": WRITE_KEY, "messageId": "s"}, {**NO_KEY, "Origin": ORIGIN}),
    "allowed origin batch": ("/v1/batch", batch(MESSAGE), {"Origin": ORIGIN}),
    "other origin": ("/v1/t", {**MESSAGE, "messageId": "s"}, {"Origin": OTHER_ORIGIN}),
    "other origin, per-item key": (
        "/v1/batch",
        batch({**MESSAGE, "writeKey": WRITE_KEY}),
        {**NO_KEY, "Origin": OTHER_ORIGIN},
    ),
    "empty origin": ("/v1/t", {**MESSAGE, "messageId": "s"}, {"Origin": ""}),
    "unknown key, browser": ("/v1/t", {**MESSAGE, "writeKey": "nope"}, {**NO_KEY, "Origin": ORIGIN}),
    "partly bad batch": ("/v1/batch", batch(MESSAGE, {"type": "nope", "userId": "u"}), {"Origin": ORIGIN}),
    "empty batch": ("/v1/batch", {"batch": []}, {}),
    "no batch": ("/v1/batch", {"events": []}, {}),
    "bad timestamp": ("/v1/track", {**MESSAGE, "timestamp": "soon"}, {}),
    "message too large": ("/v1/track", {**MESSAGE, "properties": {"x": "y" * 40_000}}, {}),
    "not an object": ("/v1/track", [MESSAGE], {}),
    "telemetry": ("/v1/m", {"series": []}, {}),
    "telemetry, browser": ("/v1/m", {"series": []}, {"Origin": ORIGIN}),
    "preflight": ("OPTIONS /v1/t", b"", {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}),
    "preflight asking headers": (
        "OPTIONS /v1/batch",
        b"",
        {"Origin": ORIGIN, "Access-Control-Request-Headers": "authorization, x-retry-count"},
    ),
    "preflight, other origin": ("OPTIONS /v1/b", b"", {"Origin": OTHER_ORIGIN}),
    "preflight, telemetry": ("OPTIONS /v1/m", b"", {"Origin": ORIGIN}),
    "unknown single": ("/v1/x", MESSAGE, {}),
}
#: Two sources for the sequences: web (allowed ORIGIN, burst 3) and "other" (allowed
#: OTHER_PAGE only, burst 1), both a token every 10 s.
OTHER_PAGE = "https://blog.example.org"
TWO_SOURCES = (
    f'allowed_origins = ["{ORIGIN}"]\nrate_limit_events_per_sec = 0.1\nrate_limit_burst = 3\n'
    f'[sources.other]\nwrite_key = "other-key"\nallowed_origins = ["{OTHER_PAGE}"]\n'
    "rate_limit_events_per_sec = 0.1\nrate_limit_burst = 1\n"
)
OTHER = {**MESSAGE, "writeKey": "other-key"}
OURS = {**MESSAGE, "writeKey": WRITE_KEY}
PARITY_SEQUENCES: dict[str, list[tuple[str, Any, dict[str, str]]]] = {
    "mixed sources, one over its limit": [
        ("/v1/t", {**OTHER, "messageId": "o"}, NO_KEY),
        ("/v1/batch", batch(OURS, OURS, OTHER), NO_KEY),
        ("/v1/batch", batch(OURS, OURS, OURS, prefix="w"), NO_KEY),
        ("/v1/t", {**MESSAGE, "messageId": "late"}, {}),
    ],
    "mixed sources, origins": [
        ("/v1/b", batch(OURS, OTHER), {**NO_KEY, "Origin": ORIGIN}),
        ("/v1/b", batch(OTHER, OURS), {**NO_KEY, "Origin": OTHER_PAGE}),
        ("/v1/b", batch(OTHER, prefix="o"), {**NO_KEY, "Origin": OTHER_PAGE}),
        ("/v1/b", batch(OURS, prefix="o"), {**NO_KEY, "Origin": OTHER_PAGE}),
        ("/v1/b", {"batch": []}, {**NO_KEY, "Origin": "http://x.example"}),
        ("/v1/b", {"batch": []}, {**NO_KEY, "Origin": ORIGIN}),
    ],
    "rate limited browser": [("/v1/t", {**OURS, "messageId": f"b{i}"}, {**NO_KEY, "Origin": ORIGIN}) for i in range(5)],
    "analytics.js batching": [
        (
            "/v1/b",
            {**batch(OURS, {**OURS, "type": "page", "name": "Home"}), "sentAt": "2024-05-01T12:00:00.050Z"},
            {**NO_KEY, "Origin": ORIGIN, "Content-Type": "text/plain"},
        ),
    ],
}
#: Stored fields that depend on the moment the request arrived.
MOMENT = ("receivedAt", "timestamp", "originalTimestamp")
#: Answer headers that depend on the moment or are the server's business.
UNCOMPARED = ("date", "content-length")


async def outcomes(app: App, requests: Sequence[tuple[str, Any, dict[str, str]]], *, closed: bool = False) -> list[Any]:
    """Each request's status, body and headers (all values, in order), then what was stored and
    the request and rejection counts."""
    # the test client's peer is a trusted proxy, so X-Forwarded-For counts
    server = msgspec.structs.replace(app.config.server, trusted_proxies=["127.0.0.0/8"])
    app.hub.use_config(dataclasses.replace(app.config, server=server), {})
    if closed:
        await app.log.aclose()  # type: ignore[attr-defined]
    seen: list[Any] = []
    for path, body, headers in requests:
        if path.startswith("OPTIONS "):
            response = await app.client().open(
                path.removeprefix("OPTIONS "),
                method="OPTIONS",
                headers=headers,
                scope_base={"client": ("127.0.0.1", 1)},
            )
            status, answer, answer_headers = response.status_code, await response.get_data(), response.headers
        else:
            status, answer, answer_headers = await post(app, path, body, headers)
        kept = sorted(
            (k.lower(), ", ".join(sorted(v.split(", "))) if k.lower() == "allow" else v)  # Quart's order varies
            for k, v in answer_headers.items()
            if k.lower() not in UNCOMPARED
        )
        seen.append((status, answer, kept))
    if not closed:
        seen.append([{k: v for k, v in m.items() if k not in MOMENT} for m in (await stored(app))])
    metrics = app.hub.metrics.render().decode()
    seen.append(sorted(line for line in metrics.splitlines() if line.startswith(COUNTED)))
    return seen


COUNTED = ("gateway_http_requests_total", "gateway_messages_rejected_total", "gateway_messages_accepted_total")


@pytest.mark.parametrize(
    "case", [*PARITY_CASES, *(f"sequence: {name}" for name in PARITY_SEQUENCES), "closed log", "closed log, browser"]
)
async def test_the_fast_path_answers_as_the_routes_do(tmp_path: Path, registry: Registry, case: str) -> None:
    name = case.removeprefix("sequence: ")
    requests = PARITY_SEQUENCES.get(name) or [PARITY_CASES.get(name) or PARITY_CASES["allowed origin"]]
    if name == "closed log":
        requests = [PARITY_CASES["batch"]]
    seen = []
    for fast_paths in (True, False):
        async with open_app(tmp_path / str(fast_paths), registry, TWO_SOURCES, fast_paths=fast_paths) as app:
            seen.append(await outcomes(app, requests, closed=case.startswith("closed log")))
    assert seen[0] == seen[1]
