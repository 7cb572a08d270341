"""The posthog destination end to end: Segment's Python client -> gateway -> destination ->
a loopback PostHog capture API that enforces the documented /batch/ schema and errors."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from gateway import epoch_ms, stable_uuid
from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

KEY = "posthog-test-write-key"
API_KEY = "phc_test_project_key"
MAX_BODY_BYTES = 20 * 1024 * 1024  # "must be less than 20MB by default" (PH-CAP)
MAX_GROUP_KEY = 400  # $group_type and $group_key: 400 characters each (PH-CAP)


class PostHogAPI:
    """PostHog's capture service as documented (PH-CAP, PH-API, PH-RUST): ``POST /batch/``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._seen: set[tuple[Any, ...]] = set()

    def __call__(self, request: ReceivedRequest) -> Answer:
        if request.method != "POST" or request.path != "/batch/":
            return Answer(404, {"type": "invalid_request", "code": "not_found"})
        if request.raw_size > MAX_BODY_BYTES:
            return Answer(413, {"type": "validation_error", "code": "payload_too_large"})
        try:
            body = request.json()
        except ValueError:
            return self._invalid("request decode error")
        if body.get("api_key") != API_KEY:
            return Answer(401, {"type": "authentication_error", "code": "invalid_api_key", "detail": "invalid"})
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            return self._invalid("empty batch")
        for item in batch:
            problem = self._problem(item)
            if problem:
                return self._invalid(problem)
        for item in batch:
            key = (item.get("uuid"), item["event"], item.get("timestamp"), item["properties"]["distinct_id"])
            if key not in self._seen:  # eventual dedup on uuid + event + timestamp + distinct_id (PH-DEDUP)
                self._seen.add(key)
                self.events.append(item)
        return Answer(200, {"status": "Ok"})

    @staticmethod
    def _invalid(detail: str) -> Answer:
        return Answer(400, {"type": "validation_error", "code": "invalid_payload", "detail": detail})

    @staticmethod
    def _problem(item: Any) -> str | None:
        if not isinstance(item, dict) or not isinstance(item.get("event"), str) or not item["event"]:
            return "missing event name"
        properties = item.get("properties")
        if not isinstance(properties, dict):
            return "properties must be an object"
        distinct_id = properties.get("distinct_id", item.get("distinct_id"))
        if not isinstance(distinct_id, str) or not distinct_id:
            return "missing distinct_id"
        if "uuid" in item:
            try:
                uuid.UUID(item["uuid"])
            except (ValueError, TypeError, AttributeError):
                return "invalid uuid"
        if item["event"] == "$groupidentify":
            for key in ("$group_type", "$group_key"):
                value = properties.get(key)
                if not isinstance(value, str) or not value or len(value) > MAX_GROUP_KEY:
                    return f"{key} must be a string of 1 to {MAX_GROUP_KEY} characters"
        if item["event"] == "$create_alias" and not properties.get("alias"):
            return "$create_alias needs properties.alias"
        return None


def config(url: str, **extra: Any) -> str:
    lines = "\n".join(
        f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}" for k, v in extra.items()
    )
    return f"""
[admin]
token = "posthog-admin-token-0123456789"

[sources.server]
write_key = "{KEY}"

[destinations.ph]
type = "posthog"
api_key = "{API_KEY}"
host = "{url}"
batch_max_wait_secs = 0.05
retry_initial_secs = 0.01
retry_max_secs = 0.05
timeout_secs = 5.0
{lines}
"""


def by_uuid_of(api: PostHogAPI, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    index = {event["uuid"]: event for event in api.events}
    return [index[stable_uuid(message["messageId"], "posthog")] for message in sent]


async def test_every_call_maps_as_posthog_documents(tmp_path: Path) -> None:
    api = PostHogAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        sent = await gw.python_client(
            KEY,
            lambda c: [
                c.identify("u1", {"email": "ada@example.com", "plan": "pro"}, anonymous_id="anon-1"),
                c.identify(anonymous_id="anon-2", traits={"plan": "free"}),
                c.track(
                    "u1",
                    "Order Completed",
                    {"order_id": "o1", "total": 30, "products": [{"product_id": "p1"}]},
                    context={
                        "campaign": {"name": "spring", "source": "news"},
                        "groupId": "acme",
                        "page": {"url": "https://shop.example/cart", "path": "/cart"},
                    },
                ),
                c.page("u1", "Docs", "Intro", {"url": "https://ex.com/docs", "title": "Intro"}),
                c.screen("u1", "Onboarding", "Welcome", {"step": 1}),
                c.alias("anon-1", "u1"),
                c.group("u1", "acme", {"name": "Acme", "employees": 12}),
            ],
        )
        await gw.wait_delivered("ph")
        identify, anon_set, order, page, screen, alias, group = by_uuid_of(api, sent)

    assert identify["event"] == "$identify"
    assert identify["properties"]["distinct_id"] == "u1"
    assert identify["properties"]["$set"] == {"email": "ada@example.com", "plan": "pro"}
    assert identify["properties"]["$anon_distinct_id"] == "anon-1"
    assert abs(epoch_ms(identify["timestamp"]) - epoch_ms(sent[0]["timestamp"])) < 60_000
    assert (anon_set["event"], anon_set["properties"]["distinct_id"]) == ("$set", "anon-2")
    assert anon_set["properties"]["$set"] == {"plan": "free"}
    assert order["event"] == "Order Completed"  # ecommerce passes through (Segment's PostHog docs)
    assert order["properties"]["order_id"] == "o1" and order["properties"]["products"] == [{"product_id": "p1"}]
    assert order["properties"]["utm_campaign"] == "spring" and order["properties"]["utm_source"] == "news"
    assert order["properties"]["$groups"] == {"segment_group": "acme"}
    assert order["properties"]["$current_url"] == "https://shop.example/cart"
    assert order["properties"]["$pathname"] == "/cart"
    assert order["properties"]["$ip"] == "127.0.0.1"
    assert order["properties"]["segment_library"]["name"] == "analytics-python"
    assert (page["event"], page["properties"]["$current_url"]) == ("$pageview", "https://ex.com/docs")
    assert (screen["event"], screen["properties"]["$screen_name"]) == ("$screen", "Welcome")
    assert screen["properties"]["step"] == 1
    assert (alias["event"], alias["properties"]["distinct_id"], alias["properties"]["alias"]) == (
        "$create_alias",
        "u1",
        "anon-1",
    )
    assert group["event"] == "$groupidentify"
    assert group["properties"]["$group_type"] == "segment_group"
    assert group["properties"]["$group_key"] == "acme"
    assert group["properties"]["$group_set"] == {"name": "Acme", "employees": 12}
    assert all(uuid.UUID(event["uuid"]).version == 5 for event in api.events)


async def test_a_redelivered_batch_is_deduplicated_by_posthog(tmp_path: Path) -> None:
    api = PostHogAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        # The first answer is lost (a 503 after PostHog stored it would look the same to us).
        server.script(Answer(503, {"type": "server_error", "code": "transient"}))
        await gw.send("track", {"userId": "u1", "event": "Signed Up", "messageId": "m-dup"}, write_key=KEY)
        await gw.wait_delivered("ph")
        requests = await server.wait_requests(2)
        assert requests[0].json()["batch"] == requests[1].json()["batch"]  # same uuids on the retry
        assert [e["event"] for e in api.events] == ["Signed Up"]
        assert gw.statistics("ph")["retries"] == 1


async def test_faults(tmp_path: Path) -> None:
    api = PostHogAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        # 429 with Retry-After, then a timeout (a stalled request), then success.
        server.script(Answer(429, {"type": "rate_limited"}, {"Retry-After": "0"}))
        server.stall()
        await gw.send("track", {"userId": "u1", "event": "A", "messageId": "f-1"}, write_key=KEY)
        await gw.wait_delivered("ph")
        assert [e["event"] for e in api.events] == ["A"]
        assert gw.statistics("ph")["retries"] == 2
        # A malformed event among good ones: a $group_key over PostHog's 400 characters. PostHog
        # answers 400 for the whole batch; the core resends one by one and dead-letters only it.
        batch = [
            {"type": "track", "userId": "u1", "event": "B", "messageId": "f-2"},
            {"type": "group", "userId": "u1", "groupId": "g" * 401, "messageId": "f-bad"},
            {"type": "track", "userId": "u1", "event": "C", "messageId": "f-3"},
            {"type": "alias", "userId": "u1", "previousId": "null", "messageId": "f-refused"},
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ph")
        assert [e["event"] for e in api.events] == ["A", "B", "C"]
        letters = {'"messageId":"f-bad"' in x["message"]: x["error"] for x in await gw.dead_letters("ph")}
        assert "HTTP 400" in letters[True] and "group_key" in letters[True]
        assert "PostHog refuses to alias with the id 'null'" in letters[False]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["ph"]
        kinds = {sample["kind"] for sample in status["errors"]}
        assert {"http_429", "timeout", "http_400", "rejected"} <= kinds


async def test_a_refused_api_key_is_permanent_and_visible(tmp_path: Path) -> None:
    api = PostHogAPI()
    text = config("URL").replace(API_KEY, "phc_wrong_key")
    async with (
        open_loopback_server(api) as server,
        run_gateway(text.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        await gw.send("track", {"userId": "u1", "event": "A", "messageId": "k-1"}, write_key=KEY)
        await gw.wait_delivered("ph")
        [letter] = await gw.dead_letters("ph")
        assert "HTTP 401" in letter["error"]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["ph"]
        [sample] = [s for s in status["errors"] if s["kind"] == "http_401"]
        assert sample["retryable"] is False
        assert "phc_wrong_key" not in str(status)
        assert '"api_key":"***"' in sample["exchange"]["request"]
