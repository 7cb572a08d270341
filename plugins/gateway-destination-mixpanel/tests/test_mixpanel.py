"""The mixpanel destination end to end: Segment's Python client -> gateway -> destination ->
a loopback Mixpanel Ingestion API that enforces the documented schema, limits and errors."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from gateway_destination_mixpanel import HOSTS, MixpanelConfig, MixpanelDestination
from gateway_destination_mixpanel.mapping import insert_id

from gateway import epoch_ms, stable_uuid
from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

KEY = "mixpanel-test-write-key"
TOKEN = "mp-project-token"
SA_USER, SA_SECRET, PROJECT = "gateway.sa", "sa-secret-0123", "314159"
BAD_IDS = {
    "00000000-0000-0000-0000-000000000000",
    "anon",
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "<nil>",
    "0",
    "-1",
    "true",
    "false",
    "[]",
    "{}",
}
PROFILE_OPS = {"$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete"}


class MixpanelAPI:
    """Mixpanel's Ingestion API as documented (MP-IMPORT, MP-OAS, MP-LIM, MP-ID): /import with
    strict validation and ``failed_records``, Basic auth by service account (+ project_id) or
    project token; /engage, /groups and /track with ``data=`` forms and verbose answers."""

    def __init__(self, merge: str = "simplified") -> None:
        self.merge = merge
        self.events: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []
        self.tracked: list[dict[str, Any]] = []
        self._seen: set[tuple[Any, ...]] = set()

    def __call__(self, request: ReceivedRequest) -> Answer:
        if request.path == "/import":
            return self._import(request)
        if request.path in ("/engage", "/groups", "/track"):
            return self._update(request)
        return Answer(404, {"error": "not found"})

    def _import(self, request: ReceivedRequest) -> Answer:
        user, _, password = base64.b64decode(request.headers.get("authorization", "Basic ")[6:]).decode().partition(":")
        if request.query.get("project_id"):
            ok = (user, password, request.query["project_id"]) == (SA_USER, SA_SECRET, PROJECT)
        else:
            ok = (user, password) == (TOKEN, "")
        if not ok:
            return Answer(401, {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"})
        if len(request.body) > 10 * 1024 * 1024:
            return Answer(413, {"code": 413, "error": "request exceeds max limit of 10485760 bytes"})
        events = request.json()
        if not isinstance(events, list) or len(events) > 2000:
            return Answer(400, {"code": 400, "error": "max 2000 events per request", "status": "Bad Request"})
        failed = []
        good = []
        for index, event in enumerate(events):
            problem = self._problem(event)
            if problem:
                insert = (event.get("properties") or {}).get("$insert_id")
                failed.append({"index": index, "insert_id": insert, "field": problem[0], "message": problem[1]})
            else:
                good.append(event)
        for event in good:
            p = event["properties"]
            key = (event["event"], p["distinct_id"], p["time"], p["$insert_id"])
            if key not in self._seen:
                self._seen.add(key)
                self.events.append(event)
        if failed:
            return Answer(
                400,
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "status": "Bad Request",
                    "num_records_imported": len(good),
                    "failed_records": failed,
                },
            )
        return Answer(200, {"code": 200, "num_records_imported": len(good), "status": "OK"})

    def _problem(self, event: Any) -> tuple[str, str] | None:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str) or not event["event"]:
            return "event", "'event' must be a non-empty string"
        p = event.get("properties")
        if not isinstance(p, dict):
            return "properties", "'properties' must be an object"
        if len(p) >= 255:
            return "properties", "events must have fewer than 255 properties"
        t = p.get("time")
        if not isinstance(t, int | float):
            return "properties.time", "'properties.time' is invalid: must be specified as seconds since epoch"
        seconds = t / 1000 if t > 10**11 else t
        if seconds < 31536000 or seconds > time.time() + 3600:
            return "properties.time", "'properties.time' is invalid: before 1971 or more than 1 hour in the future"
        distinct_id = p.get("distinct_id")
        if not isinstance(distinct_id, str) or distinct_id.lower() in BAD_IDS:
            return "properties.distinct_id", f"'properties.distinct_id' is invalid: {distinct_id!r}"
        insert = p.get("$insert_id")
        if not isinstance(insert, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,36}", insert) or insert in BAD_IDS:
            return "properties.$insert_id", "'properties.$insert_id' is invalid"
        if self.merge == "original" and event["event"] == "$identify":
            try:
                valid = uuid.UUID(p.get("$anon_id", "")).version == 4
            except ValueError:
                valid = False
            if not valid:
                return "properties.$anon_id", "'$anon_id' must be a UUID v4"
        return None

    def _update(self, request: ReceivedRequest) -> Answer:
        if request.query.get("verbose") != "1":
            return Answer(200, "1")
        try:
            updates = json.loads(request.form()["data"])
        except (KeyError, ValueError):
            return Answer(200, {"status": 0, "error": "data, missing or empty"})
        for update in updates if isinstance(updates, list) else [updates]:
            if request.path == "/track":
                if update.get("properties", {}).get("token") != TOKEN:
                    return Answer(200, {"status": 0, "error": "token, missing or empty"})
                continue
            if update.get("$token") != TOKEN:
                return Answer(200, {"status": 0, "error": "$token, missing or empty"})
            ids = ("$distinct_id",) if request.path == "/engage" else ("$group_key", "$group_id")
            if any(not isinstance(update.get(k), str) or not update.get(k) for k in ids):
                return Answer(200, {"status": 0, "error": f"{'/'.join(ids)} missing"})
            if len(PROFILE_OPS & set(update)) != 1:
                return Answer(200, {"status": 0, "error": "exactly one operation per update"})
        target = {"/engage": self.profiles, "/groups": self.groups, "/track": self.tracked}[request.path]
        target.extend(updates if isinstance(updates, list) else [updates])
        return Answer(200, {"status": 1, "error": None})


def config(url: str, extra: str = "") -> str:
    return f"""
[admin]
token = "mixpanel-admin-token-0123456789"

[sources.server]
write_key = "{KEY}"

[destinations.mp]
type = "mixpanel"
project_token = "{TOKEN}"
service_account_username = "{SA_USER}"
service_account_secret = "{SA_SECRET}"
project_id = "{PROJECT}"
api_host = "{url}"
batch_max_wait_secs = 0.05
retry_initial_secs = 0.01
retry_max_secs = 0.05
timeout_secs = 1.0
concurrency = 1
{extra}
"""


ORDER = {
    "order_id": "o-1",
    "checkout_id": "c-1",
    "total": 30,
    "currency": "USD",
    "products": [
        {"product_id": "p-1", "name": "Mug", "price": 10, "quantity": 2},
        {"product_id": "p-2", "name": "Tee", "price": 10, "quantity": 1},
    ],
}
ANON = "6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f0a2b"


async def test_every_call_maps_as_segment_documents(tmp_path: Path) -> None:
    api = MixpanelAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        sent = await gw.python_client(
            KEY,
            lambda c: [
                c.identify(
                    "user-1",
                    {"email": "ada@example.com", "firstName": "Ada", "lastName": "L", "plan": "pro"},
                    anonymous_id=ANON,
                ),
                c.track(
                    "user-1",
                    "Order Completed",
                    ORDER,
                    context={"os": {"name": "iOS"}, "groupId": "acme", "campaign": {"name": "spring"}},
                ),
                c.track(anonymous_id=ANON, event="Product Viewed", properties={"product_id": "p-1"}),
                c.page("user-1", "Docs", "Intro", {"url": "https://ex.com/docs"}),
                c.screen("user-1", name=None, properties={"x": 1}),
                c.group("user-1", "acme", {"name": "Acme", "plan": "enterprise"}),
                c.alias(ANON, "user-1"),
            ],
        )
        await gw.wait_delivered("mp")
        assert gw.destination("mp").status()["calls_skipped"] == 1  # alias: no effect in Simplified ID Merge
        imports = [r for r in server.requests if r.path == "/import"]
        assert imports[0].query == {"strict": "1", "project_id": PROJECT}
        assert imports[0].headers["content-type"] == "application/json"

    _identify, order, _viewed, _page, _screen, _group, _alias = sent
    by_name = {event["event"]: event["properties"] for event in api.events}
    merge = by_name["$identify"]
    assert (merge["$identified_id"], merge["$anon_id"]) == ("user-1", ANON)
    assert (merge["$user_id"], merge["$device_id"], merge["distinct_id"]) == ("user-1", ANON, "user-1")
    [profile] = api.profiles
    assert profile["$distinct_id"] == "user-1" and profile["$ip"] == "127.0.0.1"
    assert profile["$set"] == {
        "$email": "ada@example.com",
        "$first_name": "Ada",
        "$last_name": "L",
        "plan": "pro",
        "$name": "Ada L",
    }

    main = by_name["Order Completed"]
    assert {k: main[k] for k in ORDER} == ORDER
    assert (main["$os"], main["$group_id"], main["utm_campaign"], main["ip"]) == ("iOS", "acme", "spring", "127.0.0.1")
    assert abs(main["time"] - epoch_ms(order["timestamp"])) < 60_000
    assert main["$insert_id"] == order["messageId"]  # analytics-python's uuid4: Mixpanel takes it as it is
    purchased = [e["properties"] for e in api.events if e["event"] == "Product Purchased"]
    assert [(p["product_id"], p["order_id"], p["checkout_id"]) for p in purchased] == [
        ("p-1", "o-1", "c-1"),
        ("p-2", "o-1", "c-1"),
    ]
    assert len({p["$insert_id"] for p in purchased} | {main["$insert_id"]}) == 3
    assert all(re.fullmatch(r"[0-9a-f-]{36}", p["$insert_id"]) for p in purchased)
    anon_view = by_name["Product Viewed"]
    assert (anon_view["distinct_id"], anon_view["$device_id"]) == (ANON, ANON) and "$user_id" not in anon_view
    assert by_name["Viewed Intro"]["url"] == "https://ex.com/docs"
    assert by_name["Loaded a Screen"]["x"] == 1
    [group_update] = api.groups
    assert group_update == {
        "$token": TOKEN,
        "$group_key": "$group_id",
        "$group_id": "acme",
        "$set": {"$name": "Acme", "plan": "enterprise"},
    }
    assert api.tracked == []


def test_insert_id_is_the_message_id_where_mixpanel_takes_it() -> None:
    """A messageId of 1-36 characters of [A-Za-z0-9-] that Mixpanel does not refuse is the
    $insert_id itself; any other, and a Product Purchased's (salted), a UUIDv5: stable, and
    always within what Mixpanel takes."""
    taken = ["6f1c9a3e-2b4d-4e8f-9a1b-3c5d7e9f0a2b", "ajs-0123456789abcdef0123456789abcdef", "M-1", "x" * 36]
    for message_id in taken:
        assert insert_id(message_id) == message_id
    hashed = ["x" * 37, "ajs-next-0123456789abcdef0123456789abcdef", "", "-", "a b", "a_b", "é", "NULL", "-1", 42, None]
    hashed += ["00000000-0000-0000-0000-000000000000", "Undefined"]
    for message_id in hashed:
        made = insert_id(message_id)
        assert made == insert_id(message_id) == stable_uuid(message_id, "mixpanel") != message_id
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", made)
    assert insert_id("M-1", 0) == stable_uuid("M-1", "mixpanel", 0) != insert_id("M-1", 1)


async def test_original_id_merge_and_project_token_auth(tmp_path: Path) -> None:
    api = MixpanelAPI(merge="original")
    extra = 'identity_merge = "original"'
    text = config("URL", extra)
    for line in (
        f'service_account_username = "{SA_USER}"',
        f'service_account_secret = "{SA_SECRET}"',
        f'project_id = "{PROJECT}"',
    ):
        text = text.replace(line, "")
    async with (
        open_loopback_server(api) as server,
        run_gateway(text.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        await gw.python_client(
            KEY,
            lambda c: [
                c.identify("user-1", {"plan": "pro"}, anonymous_id=ANON),
                c.alias(ANON, "user-1"),
                c.identify("user-2", {}, anonymous_id="not-a-uuid"),
            ],
        )
        await gw.wait_delivered("mp")
        assert server.requests[0].query == {"strict": "1"}
        [letter] = await gw.dead_letters("mp")  # Original ID Merge wants a UUIDv4 $anon_id
        assert "$anon_id" in letter["error"] and "not-a-uuid" in letter["message"]
    assert [e["properties"]["$anon_id"] for e in api.events] == [ANON]
    assert api.tracked == [
        {"event": "$create_alias", "properties": {"distinct_id": ANON, "alias": "user-1", "token": TOKEN}}
    ]


async def test_failed_records_dead_letter_only_their_messages(tmp_path: Path) -> None:
    api = MixpanelAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        batch = [
            {"type": "track", "userId": "user-1", "event": "A", "messageId": "ok-1"},
            {"type": "track", "userId": "undefined", "event": "B", "messageId": "bad-1"},
            {"type": "identify", "userId": "user-1", "traits": {"plan": "x"}, "messageId": "ok-2"},
            {
                "type": "track",
                "userId": "user-1",
                "event": "C",
                "messageId": "old",
                "timestamp": "1970-01-01T00:00:01Z",
            },
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("mp")
        assert [e["event"] for e in api.events] == ["A"]
        assert len(api.profiles) == 1
        letters = sorted((letter["seq"], letter["error"]) for letter in await gw.dead_letters("mp"))
        assert [error for _, error in letters] == [
            "Mixpanel refused the event: properties.distinct_id: 'properties.distinct_id' is invalid: 'undefined'",
            "Mixpanel refused the event: properties.time: 'properties.time' is invalid: "
            "before 1971 or more than 1 hour in the future",
        ]
        assert len([r for r in server.requests if r.path == "/import"]) == 1  # validation errors are not retried
        stats = gw.statistics("mp")
        assert (stats["delivered"], stats["dead_lettered"], stats["retries"]) == (2, 2, 0)


async def test_group_updates_do_not_wait_for_import_but_profile_updates_do(tmp_path: Path) -> None:
    api = MixpanelAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        server.stall()  # the first request to arrive hangs until the client's timeout
        batch = [
            {"type": "track", "userId": "user-1", "event": "A", "messageId": "s-1"},
            {"type": "group", "userId": "user-1", "groupId": "acme", "traits": {"plan": "x"}, "messageId": "s-2"},
            # Its $identify event is refused (distinct_id "undefined"), so its profile update is not sent.
            {"type": "identify", "userId": "undefined", "anonymousId": ANON, "traits": {"a": 1}, "messageId": "s-3"},
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("mp")
        [letter] = await gw.dead_letters("mp")
    # Whichever of the two hung, the other went out beside it rather than after its timeout.
    assert {request.path for request in server.requests[:2]} == {"/import", "/groups"}
    assert [e["event"] for e in api.events] == ["A"] and api.groups and api.profiles == []
    assert '"messageId":"s-3"' in letter["message"] and "distinct_id" in letter["error"]


async def test_faults(tmp_path: Path) -> None:
    api = MixpanelAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        server.script(
            Answer(429, {"code": 429, "error": "Project exceeded rate limits."}, {"Retry-After": "0"}),
            Answer(502, "bad gateway"),
        )
        server.stall()
        await gw.send("track", {"userId": "user-1", "event": "A", "messageId": "f-1"}, write_key=KEY)
        await gw.wait_delivered("mp")
        assert [e["event"] for e in api.events] == ["A"]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["mp"]
        assert {"http_429", "http_502", "timeout"} <= {s["kind"] for s in status["errors"]}


async def test_refused_credentials_are_permanent_and_visible(tmp_path: Path) -> None:
    api = MixpanelAPI()
    text = config("URL").replace(SA_SECRET, "wrong-secret-42")
    async with (
        open_loopback_server(api) as server,
        run_gateway(text.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        await gw.send("track", {"userId": "user-1", "event": "A", "messageId": "c-1"}, write_key=KEY)
        await gw.wait_delivered("mp")
        [letter] = await gw.dead_letters("mp")
        assert "HTTP 401" in letter["error"]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["mp"]
        [sample] = [s for s in status["errors"] if s["kind"] == "http_401"]
        assert sample["retryable"] is False and "authorization: ***" in sample["exchange"]["request"].lower()
        assert "wrong-secret-42" not in str(status)


@pytest.mark.parametrize("region", ["us", "eu", "in"])
async def test_residency_hosts(region: str, tmp_path: Path) -> None:
    from gateway import DestinationContext

    config = MixpanelConfig(project_token=TOKEN, region=region)  # type: ignore[arg-type]
    async with MixpanelDestination(config, DestinationContext("mp", tmp_path)) as destination:
        assert destination.status()["host"] == HOSTS[region]
    assert HOSTS == {
        "us": "https://api.mixpanel.com",
        "eu": "https://api-eu.mixpanel.com",
        "in": "https://api-in.mixpanel.com",
    }
