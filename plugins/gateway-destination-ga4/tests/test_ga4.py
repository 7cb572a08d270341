"""The ga4 destination end to end: Segment's Python client -> gateway -> destination -> a
loopback Measurement Protocol (collection and validation servers) that applies GA4's
documented naming rules, limits and reserved names."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from gateway_destination_ga4 import Ga4Config, to_ga4, valid_name

from gateway import epoch_ms
from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

KEY = "ga4-test-write-key"
MEASUREMENT_ID, API_SECRET = "G-TEST123", "ga4-api-secret-xyz"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
RESERVED_EVENTS = {
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_update",
    "error",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_open",
    "os_update",
    "session_start",
    "user_engagement",
}
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
LONG = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
CURRENCIES = {"USD", "EUR", "GBP", "JPY"}


def problems(body: Any) -> list[dict[str, str]]:
    """The validation messages GA4's validation server gives for a body (GA-VAL, GA-SEND, GA-NAMES)."""
    out: list[dict[str, str]] = []

    def flag(path: str, code: str, text: str) -> None:
        out.append({"fieldPath": path, "validationCode": code, "description": text})

    if not isinstance(body.get("client_id"), str) or not body["client_id"]:
        flag("client_id", "VALUE_REQUIRED", "client_id is required")
    if len(str(body.get("user_id", ""))) > 256:
        flag("user_id", "VALUE_INVALID", "user_id is longer than 256 characters")
    events = body.get("events") or []
    if len(events) > 25:
        flag("events", "EXCEEDED_MAX_ENTITIES", "A maximum of 25 events can be specified")
    for i, event in enumerate(events):
        name, params = event.get("name", ""), event.get("params", {})
        where = f"events[{i}]"
        if not NAME.fullmatch(name):
            flag(f"{where}.name", "NAME_INVALID", f"Event at index: [{i}] has invalid name [{name}].")
        elif name in RESERVED_EVENTS:
            flag(f"{where}.name", "NAME_RESERVED", f"Event at index: [{i}] has name [{name}] which is reserved.")
        if len(params) > 25:
            flag(f"{where}.params", "EXCEEDED_MAX_ENTITIES", f"Event at index: [{i}] has more than 25 params.")
        for key, value in params.items():
            if not NAME.fullmatch(key) or key.startswith(RESERVED_PREFIXES):
                flag(f"{where}.params.{key}", "NAME_INVALID", f"Event at index: [{i}] has invalid param [{key}].")
            if key == "items":
                for n, item in enumerate(value if isinstance(value, list) else [None]):
                    if not isinstance(item, dict) or not (item.get("item_id") or item.get("item_name")):
                        flag(
                            f"{where}.params.items[{n}]",
                            "VALUE_REQUIRED",
                            f"Event at index: [{i}] item at index [{n}] needs item_id or item_name.",
                        )
            elif not isinstance(value, str | int | float) or isinstance(value, bool):
                flag(
                    f"{where}.params.{key}",
                    "VALUE_INVALID",
                    f"Event at index: [{i}] param [{key}] has an invalid value.",
                )
            elif isinstance(value, str) and len(value) > LONG.get(key, 100):
                flag(
                    f"{where}.params.{key}", "VALUE_OUT_OF_BOUNDS", f"Event at index: [{i}] param [{key}] is too long."
                )
        if name in ("purchase", "refund") and not params.get("transaction_id"):
            flag(f"{where}.params.transaction_id", "VALUE_REQUIRED", f"Event at index: [{i}] needs transaction_id.")
        if "value" in params and params.get("currency") not in CURRENCIES:
            flag(f"{where}.params.currency", "VALUE_INVALID", f"Event at index: [{i}] needs an ISO 4217 currency.")
        stamp = event.get("timestamp_micros")
        if isinstance(stamp, int) and stamp < (time.time() - 72 * 3600) * 1_000_000:
            flag(f"{where}.timestamp_micros", "VALUE_OUT_OF_BOUNDS", f"Event at index: [{i}] is older than 72 hours.")
    return out


class MeasurementProtocol:
    """``/mp/collect`` answers 204 whatever it drops (GA-REF); ``/debug/mp/collect`` says what."""

    def __init__(self) -> None:
        self.collected: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (body without events, event)
        self.dropped: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: ReceivedRequest) -> Answer:
        if request.method != "POST" or request.path not in ("/mp/collect", "/debug/mp/collect"):
            return Answer(404, "")
        if set(request.query) != {"measurement_id", "api_secret"}:
            return Answer(400, "measurement_id and api_secret are required")
        if request.raw_size >= 130_000:
            return Answer(413, "")
        body = request.json()
        found = problems(body)
        if request.path == "/debug/mp/collect":  # it does not check api_secret (GA-VAL)
            return Answer(200, {"validationMessages": found})
        if (request.query["measurement_id"], request.query["api_secret"]) != (MEASUREMENT_ID, API_SECRET):
            self.dropped.extend(("unknown api_secret", event) for event in body.get("events", []))
            return Answer(204, b"")
        bad = {int(m) for f in found for m in re.findall(r"events\[(\d+)\]", f["fieldPath"])}
        whole = [f for f in found if not f["fieldPath"].startswith("events[")]
        head = {k: v for k, v in body.items() if k != "events"}
        for index, event in enumerate(body.get("events", [])):
            if index in bad or whole:
                self.dropped.append(("invalid", event))
            else:
                self.collected.append((head, event))
        return Answer(204, b"")


def config(url: str, extra: str = "") -> str:
    return f"""
[admin]
token = "ga4-admin-token-0123456789"

[sources.web]
write_key = "{KEY}"

[destinations.ga]
type = "ga4"
measurement_id = "{MEASUREMENT_ID}"
api_secret = "{API_SECRET}"
endpoint = "{url}"
batch_max_wait_secs = 0.05
retry_initial_secs = 0.01
retry_max_secs = 0.05
timeout_secs = 1.0
{extra}
"""


ORDER = {
    "order_id": "T-1",
    "total": 30.5,
    "revenue": 25,
    "shipping": 3,
    "tax": 2.5,
    "coupon": "SPRING",
    "currency": "usd",
    "affiliation": "Shop",
    "products": [
        {
            "product_id": "p-1",
            "sku": "S1",
            "name": "Mug",
            "brand": "Acme",
            "category": "Kitchen",
            "variant": "Blue",
            "price": 10,
            "quantity": 2,
            "position": 1,
            "coupon": "MUG",
            "url": "https://x",
            "image_url": "https://y",
        },
        {"product_id": "p-2", "name": "Tee", "price": 5.5, "quantity": 1},
    ],
}


async def test_every_event_maps_as_segment_documents(tmp_path: Path) -> None:
    mp = MeasurementProtocol()
    async with open_loopback_server(mp) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        cookie = {"Google Analytics 4": {"_ga": "GA1.1.1234567.1700000000", "session_id": "1700000001"}}
        sent = await gw.python_client(
            KEY,
            lambda c: [
                c.page(
                    "u1",
                    "Docs",
                    "Intro",
                    anonymous_id="anon-1",
                    context={
                        "page": {
                            "url": "https://ex.com/docs",
                            "referrer": "https://google.com",
                            "title": "Intro " + "t" * 400,
                        }
                    },
                ),
                c.track("u1", "Order Completed", ORDER, anonymous_id="anon-1", integrations=cookie),
                c.track(
                    "u1",
                    "Product Viewed",
                    {"product_id": "p-1", "name": "Mug", "price": 10, "currency": "EUR"},
                    anonymous_id="anon-1",
                ),
                c.track(
                    "u1",
                    "Product Added",
                    {
                        "product_id": "p-1",
                        "name": "Mug",
                        "price": 10,
                        "quantity": 3,
                        "currency": "EUR",
                        "cart_id": "c1",
                    },
                    anonymous_id="anon-1",
                ),
                c.track(
                    "u1",
                    "Checkout Started",
                    {"order_id": "T-1", "value": 25, "currency": "USD", "products": ORDER["products"]},
                    anonymous_id="anon-1",
                ),
                c.track(
                    "u1", "Order Refunded", {"order_id": "T-1", "total": 30.5, "currency": "USD"}, anonymous_id="anon-1"
                ),
                c.track(
                    "u1",
                    "Video Played!",
                    {"2x speed": True, "title": "x" * 150, "nested": {"a": 1}, "_private": 1, "ga_x": 2},
                    anonymous_id="anon-1",
                ),
                c.identify("u1", {"plan": "pro"}),
            ],
        )
        await gw.wait_delivered("ga")
        assert gw.destination("ga").status()["calls_skipped"] == 1  # identify: no GA4 event
        request = server.requests[0]
        assert request.query == {"measurement_id": MEASUREMENT_ID, "api_secret": API_SECRET}

    assert mp.dropped == []
    by_client: dict[str, list[dict[str, Any]]] = {}
    for head, event in mp.collected:
        assert head.get("user_id") == "u1"
        by_client.setdefault(head["client_id"], []).append(event)
    assert sorted(by_client) == ["1234567.1700000000", "anon-1"]  # the _ga cookie's client id wins
    [purchase] = by_client["1234567.1700000000"]
    events = {event["name"]: event for event in by_client["anon-1"]}
    page = events["page_view"]["params"]
    assert (page["page_location"], page["page_referrer"]) == ("https://ex.com/docs", "https://google.com")
    assert len(page["page_title"]) == 300 and page["engagement_time_msec"] == 1
    assert abs(events["page_view"]["timestamp_micros"] // 1000 - epoch_ms(sent[0]["timestamp"])) < 60_000

    p = purchase["params"]
    assert (p["transaction_id"], p["value"], p["currency"], p["shipping"], p["tax"], p["coupon"]) == (
        "T-1",
        30.5,
        "USD",
        3,
        2.5,
        "SPRING",
    )
    assert p["session_id"] == "1700000001"
    assert p["items"] == [
        {
            "item_id": "p-1",
            "item_name": "Mug",
            "coupon": "MUG",
            "item_brand": "Acme",
            "item_category": "Kitchen",
            "item_variant": "Blue",
            "price": 10,
            "quantity": 2,
            "index": 1,
        },
        {"item_id": "p-2", "item_name": "Tee", "price": 5.5, "quantity": 1},
    ]
    view = events["view_item"]["params"]
    assert view["items"] == [{"item_id": "p-1", "item_name": "Mug", "price": 10}]
    # value from properties.value only, never price x quantity (Segment's mapping, destinations.md 6.3)
    assert ("value" not in view, view["currency"]) == (True, "EUR")
    assert "value" not in events["add_to_cart"]["params"]
    begin = events["begin_checkout"]["params"]
    assert (begin["value"], len(begin["items"])) == (25, 2)
    refund = events["refund"]["params"]
    assert (refund["transaction_id"], refund["value"], "items" not in refund) == ("T-1", 30.5, True)
    custom = events["Video_Played_"]["params"]
    assert custom["n_2x_speed"] == "true" and len(custom["title"]) == 100
    assert "nested" not in custom and "n_private" in custom and "n_ga_x" in custom


async def test_25_events_a_request_per_client(tmp_path: Path) -> None:
    mp = MeasurementProtocol()
    async with (
        open_loopback_server(mp) as server,
        run_gateway(
            config(server.url).replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5"), data_dir=tmp_path
        ) as gw,
    ):
        batch = [
            {"type": "track", "anonymousId": f"a{i % 2}", "event": "Tick", "messageId": f"m{i}"} for i in range(60)
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ga")
    assert len(mp.collected) == 60 and mp.dropped == []
    assert all(len(r.json()["events"]) <= 25 and len({r.json()["client_id"]}) == 1 for r in server.requests)
    assert len(server.requests) >= 4


async def test_a_retry_sends_only_the_requests_that_failed(tmp_path: Path) -> None:
    # One batch, three clients: three requests, the first answered 429. The retry sends that
    # request's events alone: GA4 has no dedup key, so the others must not arrive twice.
    mp = MeasurementProtocol()
    async with (
        open_loopback_server(mp) as server,
        run_gateway(
            config(server.url).replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5"), data_dir=tmp_path
        ) as gw,
    ):
        server.script(Answer(429, "", {"Retry-After": "0"}))
        batch = [
            {"type": "track", "anonymousId": f"a{i % 3}", "event": "Tick", "messageId": f"m{i}", "properties": {"n": i}}
            for i in range(60)
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ga")
        assert gw.statistics("ga")["delivered"] == 60 and gw.statistics("ga")["retries"] == 1
    assert sorted(e["params"]["n"] for _, e in mp.collected) == list(range(60))
    assert len(server.requests) == 4
    assert server.requests[3].json() == server.requests[0].json()  # the refused one, again


async def test_validate_dead_letters_what_ga4_would_drop(tmp_path: Path) -> None:
    mp = MeasurementProtocol()
    async with (
        open_loopback_server(mp) as server,
        run_gateway(config(server.url, "validate = true"), data_dir=tmp_path) as gw,
    ):
        batch = [
            {"type": "track", "anonymousId": "a1", "event": "Good One", "messageId": "ok-1"},
            {
                "type": "track",
                "anonymousId": "a1",
                "event": "Order Completed",
                "messageId": "no-txn",
                "properties": {"total": 5, "currency": "USD", "products": [{"product_id": "p"}]},
            },
            {"type": "track", "anonymousId": "a1", "event": "Good Two", "messageId": "ok-2"},
            {
                "type": "track",
                "anonymousId": "a1",
                "event": "Order Refunded",
                "messageId": "no-txn-2",
                "properties": {"currency": "USD"},
            },
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ga")
        assert [e["name"] for _, e in mp.collected] == ["Good_One", "Good_Two"]
        assert mp.dropped == []
        assert [r.path for r in server.requests] == ["/debug/mp/collect", "/mp/collect"]
        letters = sorted((letter["seq"], letter["error"]) for letter in await gw.dead_letters("ga"))
        assert letters[0][1].startswith("GA4 validation: VALUE_REQUIRED: Event at index: [1] needs transaction_id")
        assert letters[1][1].startswith("GA4 validation: VALUE_REQUIRED: Event at index: [3] needs transaction_id")
        assert gw.statistics("ga")["delivered"] == 2


async def test_without_validate_ga4_drops_silently(tmp_path: Path) -> None:
    mp = MeasurementProtocol()
    async with open_loopback_server(mp) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        refund = {"anonymousId": "a1", "event": "Order Refunded", "messageId": "r-1", "properties": {"currency": "USD"}}
        await gw.send("track", refund, write_key=KEY)
        await gw.wait_delivered("ga")
    assert [reason for reason, _ in mp.dropped] == ["invalid"]  # what validate = true is for


@pytest.mark.parametrize(
    ("answer", "kind"),
    [(Answer(429, "", {"Retry-After": "0"}), "http_429"), (Answer(503, "unavailable"), "http_503"), (None, "timeout")],
)
async def test_retried_faults(tmp_path: Path, answer: Answer | None, kind: str) -> None:
    mp = MeasurementProtocol()
    async with open_loopback_server(mp) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        if answer is None:
            server.stall()
        else:
            server.script(answer)
        await gw.send("track", {"anonymousId": "a1", "event": "E", "messageId": "f-1"}, write_key=KEY)
        await gw.wait_delivered("ga")
        assert [e["name"] for _, e in mp.collected] == ["E"]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["ga"]
        assert kind in {s["kind"] for s in status["errors"]}


async def test_a_refusal_is_permanent_and_the_secret_never_shows(tmp_path: Path) -> None:
    mp = MeasurementProtocol()
    async with open_loopback_server(mp) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        server.script(Answer(403, "forbidden"))
        await gw.send("track", {"anonymousId": "a1", "event": "E", "messageId": "x-1"}, write_key=KEY)
        await gw.wait_delivered("ga")
        [letter] = await gw.dead_letters("ga")
        assert "HTTP 403" in letter["error"]
        status = (await gw.admin("GET", "/status")).json()["destinations"]["ga"]
        [sample] = [s for s in status["errors"] if s["kind"] == "http_403"]
        assert sample["retryable"] is False and "api_secret=***" in sample["exchange"]["request"]
        assert API_SECRET not in str(status) and API_SECRET not in letter["error"]


def test_valid_names() -> None:
    assert valid_name("Video Played!") == "Video_Played_"
    assert valid_name("2fa done") == "n_2fa_done"
    assert valid_name("firebase_x") == "n_firebase_x"
    assert valid_name("x" * 50) == "x" * 40
    assert valid_name("Signed-Up", lowercase=True) == "signed_up"


def test_a_user_id_longer_than_ga4_takes_is_left_out() -> None:
    config = Ga4Config(measurement_id="G-1", api_secret="s")
    for user_id, sent in [("u" * 256, "u" * 256), ("u" * 257, None)]:
        mapped = to_ga4({"type": "track", "event": "E", "anonymousId": "a", "userId": user_id}, config)
        assert mapped is not None and mapped.user_id == sent and mapped.client_id == "a"


def test_reserved_event_and_parameter_names_are_renamed_not_dropped() -> None:
    """GA4 silently drops an event with a reserved name or parameter: a custom one gets ``n_``."""
    config = Ga4Config(measurement_id="G-1", api_secret="s")
    for event, name in [("session_start", "n_session_start"), ("Session Start", "Session_Start"), ("click", "n_click")]:
        message = {"type": "track", "event": event, "anonymousId": "a", "properties": {"gclid": "g", "plan": "p"}}
        mapped = to_ga4(message, config)
        assert mapped is not None and mapped.event["name"] == name
        assert {k: v for k, v in mapped.event["params"].items() if k != "engagement_time_msec"} == {
            "n_gclid": "g",
            "plan": "p",
        }
    page = to_ga4({"type": "page", "anonymousId": "a", "name": "Home"}, config)
    assert page is not None and page.event["name"] == "page_view"


def test_properties_of_one_shape_map_alike_whatever_their_values() -> None:
    """Names are worked out once per shape of properties: a value GA4 would drop frees a name and
    a place for the properties after it, in a message of the same shape as one without."""
    config = Ga4Config(measurement_id="G-1", api_secret="s")
    names = [f"p{i}" for i in range(24)] + ["a b", "a_b"]  # 26 properties; "a b" and "a_b" share a name

    def params(values: dict[str, Any]) -> dict[str, Any]:
        event = to_ga4({"type": "track", "event": "E", "anonymousId": "a", "properties": values}, config)
        assert event is not None
        return dict(event.event["params"])

    kept = params({name: "v" for name in names})
    assert len(kept) == 25 and "a_b" not in kept and kept["p23"] == "v"
    dropped = params({**{name: "v" for name in names}, "p3": None, "a b": {"x": 1}})
    assert "p3" not in dropped and dropped["a_b"] == "v" and len(dropped) == 25
    assert params({**{name: 1 for name in names}, "p0": True})["p0"] == "true"
    assert params({name: "v" for name in names}) == kept  # the same shape again


def test_a_page_that_is_not_an_object_is_no_page() -> None:
    """The Tracking API checks that a context is an object, not its page: a page call whose
    ``context.page`` is a string, a list or a number maps as one without a page (it raised,
    and the delivery worker retried the whole batch for ever)."""
    config = Ga4Config(measurement_id="G-1", api_secret="s")
    for page in ("https://x.example/", ["u"], 5, True):
        message = {"type": "page", "anonymousId": "a", "name": "Home", "context": {"page": page}}
        event = to_ga4({**message, "properties": {"url": "https://p.example/"}}, config)
        assert event is not None
        assert event.event["params"] == {
            "page_location": "https://p.example/",
            "page_title": "Home",
            "engagement_time_msec": 1,
        }


def test_a_custom_event_maps_alike_with_and_without_options() -> None:
    """A custom event without GA4 options takes its name and parameter names from what was worked
    out for its shape: the same as an event of that shape with options (mapped step by step), for
    each destination's own settings."""
    plain = Ga4Config(measurement_id="G-1", api_secret="s")
    lowercase = Ga4Config(measurement_id="G-1", api_secret="s", lowercase_event_names=True, engagement_time_msec=7)
    properties = {"Plan Name": "Pro", "engagement_time_msec": 5, "seats": 3.5, "trial": False, "gclid": "g"}
    options = {"Google Analytics 4": {"clientId": "a"}}
    for config in (plain, lowercase, plain):
        for values in (properties, {**properties, "seats": None}, {**properties, "trial": [1]}, {}):
            message = {"type": "track", "event": "Seat Added", "anonymousId": "a", "properties": values}
            fast = to_ga4(message, config)
            step_by_step = to_ga4({**message, "integrations": options}, config)
            assert fast is not None and fast == step_by_step
    fast = to_ga4({"type": "track", "event": "Seat Added", "anonymousId": "a", "properties": properties}, lowercase)
    assert fast is not None and fast.event["name"] == "seat_added"
    assert fast.event["params"] == {
        "engagement_time_msec": 7,
        "Plan_Name": "Pro",
        "seats": 3.5,
        "trial": "false",
        "n_gclid": "g",
    }


def test_events_with_long_names_map_alike_and_are_not_kept() -> None:
    """The plans of shapes are kept by name: an event whose names are long (a client sending
    hundreds of distinct ones) maps the same but is not kept, so what the caches hold stays
    bounded by characters, not only by count."""
    from gateway_destination_ga4 import mapping

    config = Ga4Config(measurement_id="G-1", api_secret="s")
    long_names = {f"p{i:02d}{'p' * 480}": i for i in range(20)}  # distinct in GA4's first 40 characters
    kept = (len(mapping._CUSTOM_EVENTS), len(mapping._PLANS))
    for event, options in (("Long One", None), ("Long Two", {"Google Analytics 4": {"clientId": "a"}})):
        message: dict[str, Any] = {"type": "track", "event": event, "anonymousId": "a", "properties": long_names}
        if options:
            message["integrations"] = options
        first, second = to_ga4(message, config), to_ga4(message, config)
        assert first is not None and first == second
        assert len(first.event["params"]) == 21  # engagement_time_msec and the 20 properties
    assert (len(mapping._CUSTOM_EVENTS), len(mapping._PLANS)) == kept
