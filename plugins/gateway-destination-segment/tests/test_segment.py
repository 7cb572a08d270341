"""The segment relay end to end: Segment's Python client -> gateway -> relay -> a loopback
Segment HTTP API that enforces the documented /v1/batch schema and limits, and -> a real peer
gateway (a Segment-compatible endpoint)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

WEB_KEY = "relay-web-write-key"
SERVER_KEY = "relay-server-write-key"
CLOUD_WEB_KEY = "cloud-web-key"
CLOUD_SERVER_KEY = "cloud-server-key"
CALL_TYPES = {"identify", "track", "page", "screen", "group", "alias"}


class SegmentAPI:
    """Segment's HTTP Tracking API as documented (SEG-HTTP, SEG-DUP): ``POST /v1/batch``, JSON
    only, write key as Basic user (password empty) or ``writeKey`` in the body, 500 KB a
    request, 32 KB a message, 2,500 messages, messageIds under 100 characters, deduplicated."""

    def __init__(self, write_keys: set[str]) -> None:
        self.write_keys = write_keys
        self.received: dict[str, list[dict[str, Any]]] = {}  # write key -> messages
        self.dropped: list[tuple[str, dict[str, Any]]] = []  # 200 but not accepted (the debugger's view)
        self._seen: set[str] = set()

    def __call__(self, request: ReceivedRequest) -> Answer:
        if request.path != "/v1/batch":
            return Answer(404, {"code": "not_found"})
        if len(request.body) > 500 * 1024:
            return Answer(400, {"code": "payload_too_large", "message": "batch over 500 KB"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Answer(400, {"code": "invalid_request", "message": "Content-Type must be application/json"})
        try:
            body = request.json()
        except ValueError:
            return Answer(400, {"code": "invalid_json", "message": "invalid JSON"})
        key = body.get("writeKey")
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):
            key = base64.b64decode(auth[6:]).decode().partition(":")[0]
        if key not in self.write_keys:
            return Answer(401, {"code": "invalid_write_key", "message": "unknown write key"})
        batch = body.get("batch")
        if not isinstance(batch, list):
            return Answer(400, {"code": "invalid_request", "message": "batch must be an array"})
        for position, message in enumerate(batch):
            problem = self._problem(message, position)
            if problem:
                self.dropped.append((problem, message))  # Segment answers 200 and drops it
                continue
            if message["messageId"] in self._seen:
                continue
            self._seen.add(message["messageId"])
            self.received.setdefault(key, []).append(message)
        return Answer(200, {"success": True})

    @staticmethod
    def _problem(message: Any, position: int) -> str | None:
        import json

        if position >= 2500:
            return "over 2,500 messages in a batch"
        if not isinstance(message, dict) or message.get("type") not in CALL_TYPES:
            return "invalid type"
        if len(json.dumps(message).encode()) > 32 * 1024:
            return "message over 32 KB"
        if not message.get("userId") and not message.get("anonymousId"):
            return "no_user_anon_id"
        if message["type"] == "track" and not message.get("event"):
            return "event_not_defined"
        if not isinstance(message.get("messageId"), str) or len(message["messageId"]) >= 100:
            return "invalid messageId"
        return None


def relay_config(endpoint: str, extra: str = "") -> str:
    return f"""
[admin]
token = "relay-admin-token-0123456789"

[server]
max_message_bytes = 65536

[sources.web]
write_key = "{WEB_KEY}"

[sources.server]
write_key = "{SERVER_KEY}"

[destinations.cloud]
type = "segment"
endpoint = "{endpoint}"
write_keys = {{ web = "{CLOUD_WEB_KEY}", server = "{CLOUD_SERVER_KEY}" }}
batch_max_wait_secs = 0.05
retry_initial_secs = 0.01
retry_max_secs = 0.05
timeout_secs = 5.0
{extra}
"""


async def test_relays_each_source_under_its_write_key_with_messages_unchanged(tmp_path: Path) -> None:
    api = SegmentAPI({CLOUD_WEB_KEY, CLOUD_SERVER_KEY})
    async with open_loopback_server(api) as server, run_gateway(relay_config(server.url), data_dir=tmp_path) as gw:
        web = await gw.python_client(
            WEB_KEY,
            lambda c: [
                c.identify("u1", {"email": "ada@example.com"}, anonymous_id="a1"),
                c.track(
                    "u1",
                    "Order Completed",
                    {"order_id": "o1", "products": [{"product_id": "p1", "price": 3}]},
                    integrations={"Mixpanel": {"foo": 1}},
                ),
                c.page("u1", "Docs", "Intro", {"url": "https://ex.com/docs"}),
                c.screen("u1", "Onboarding", "Welcome"),
                c.group("u1", "acme", {"name": "Acme"}),
                c.alias("a1", "u1"),
            ],
        )
        server_side = await gw.python_client(SERVER_KEY, lambda c: [c.track("u2", "Invoice Paid", {"amount": 5})])
        await gw.wait_delivered("cloud")
        [request, *_] = server.requests
        assert request.headers["content-type"] == "application/json"
        assert request.json()["sentAt"].endswith("Z")

    assert api.dropped == []
    for key, sent in ((CLOUD_WEB_KEY, web), (CLOUD_SERVER_KEY, server_side)):
        received = {m["messageId"]: m for m in api.received[key]}
        assert sorted(received) == sorted(m["messageId"] for m in sent)
        for message in sent:
            relayed = received[message["messageId"]]
            for field in (
                "type",
                "userId",
                "anonymousId",
                "event",
                "properties",
                "traits",
                "name",
                "category",
                "groupId",
                "previousId",
                "integrations",
            ):
                assert relayed.get(field) == message.get(field), (field, relayed, message)
            assert relayed["originalTimestamp"] == message["timestamp"]  # the client's time, kept
            assert relayed["context"]["library"] == message["context"]["library"]
            assert relayed["context"]["ip"] == "127.0.0.1"
            assert "writeKey" not in relayed


async def test_batches_stay_within_segments_limits(tmp_path: Path) -> None:
    api = SegmentAPI({CLOUD_WEB_KEY, CLOUD_SERVER_KEY})
    extra = "batch_max_messages = 3000\nbatch_max_bytes = 8000000"
    async with (
        open_loopback_server(api) as server,
        run_gateway(
            relay_config(server.url, extra).replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5"),
            data_dir=tmp_path,
        ) as gw,
    ):
        big = "x" * 20_000
        events = [
            {"type": "track", "userId": "u", "event": "Big", "messageId": f"b-{i}", "properties": {"blob": big}}
            for i in range(60)
        ]
        events += [{"type": "track", "userId": "u", "event": "Small", "messageId": f"s-{i}"} for i in range(2600)]
        for start in range(0, len(events), 500):
            assert (await gw.batch(events[start : start + 500], write_key=WEB_KEY)).status_code == 200
        await gw.wait_delivered("cloud")
    assert api.dropped == []
    assert len(api.received[CLOUD_WEB_KEY]) == 2660
    assert all(len(r.body) <= 500 * 1024 and len(r.json()["batch"]) <= 2500 for r in server.requests)


async def test_faults_retry_and_dead_letter_alone(tmp_path: Path) -> None:
    api = SegmentAPI({CLOUD_WEB_KEY, CLOUD_SERVER_KEY})
    async with open_loopback_server(api) as server, run_gateway(relay_config(server.url), data_dir=tmp_path) as gw:
        server.script(Answer(429, {"code": "rate_limited"}, {"Retry-After": "0"}), Answer(502, "bad gateway"))
        server.stall()
        huge = {
            "type": "track",
            "userId": "u",
            "event": "Huge",
            "messageId": "too-big",
            "properties": {"b": "y" * 40_000},
        }
        batch = [
            {"type": "track", "userId": "u", "event": "A", "messageId": "ok-1"},
            huge,
            {"type": "track", "userId": "u", "event": "B", "messageId": "ok-2"},
        ]
        assert (await gw.batch(batch, write_key=WEB_KEY)).status_code == 200
        await gw.wait_delivered("cloud")
        assert [m["messageId"] for m in api.received[CLOUD_WEB_KEY]] == ["ok-1", "ok-2"]
        assert gw.statistics("cloud")["retries"] == 3
        [letter] = await gw.dead_letters("cloud")
        assert "over 32768" in letter["error"] and '"messageId":"too-big"' in letter["message"]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["cloud"]
        assert {"http_429", "http_502", "timeout", "rejected"} <= {s["kind"] for s in status["errors"]}


PEER = """
[sources.edge]
write_key = "{key}"

[server]
max_message_bytes = 20000

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""


async def test_relays_to_a_peer_gateway_which_refuses_what_it_would_not_store(tmp_path: Path) -> None:
    peer_config = PEER.format(key=CLOUD_WEB_KEY)
    async with run_gateway(peer_config, data_dir=tmp_path / "peer") as peer:
        config = relay_config(peer.url).replace(f', server = "{CLOUD_SERVER_KEY}"', ', server = "not-a-peer-key"')
        async with run_gateway(config, data_dir=tmp_path / "edge") as gw:
            sent = await gw.python_client(
                WEB_KEY,
                lambda c: [
                    c.track("u1", "Signed Up", {"plan": "pro"}),
                    c.track("u1", "Too Big", {"blob": "z" * 25_000}),
                    c.identify("u1", {"plan": "pro"}),
                ],
            )
            await gw.python_client(SERVER_KEY, lambda c: [c.track("u9", "Refused Key")])
            await gw.wait_delivered("cloud")
            delivered = await peer.wait_recorded("rec", 2)
            assert [m["messageId"] for m in delivered] == [sent[0]["messageId"], sent[2]["messageId"]]
            assert delivered[0]["properties"] == {"plan": "pro"}
            letters = await gw.dead_letters("cloud")
            errors = sorted(letter["error"] for letter in letters)
            assert len(errors) == 2
            assert "HTTP 401" in errors[0]  # the peer does not know that write key: permanent
            assert errors[1].startswith("refused by the receiver: message_too_large")
            stats = gw.statistics("cloud")
            assert (stats["delivered"], stats["dead_lettered"]) == (2, 2)
            status = (await gw.admin("GET", "/status")).json()
            assert "not-a-peer-key" not in str(status)
            assert {"http_401", "rejected"} <= {s["kind"] for s in status["destinations"]["cloud"]["errors"]}
