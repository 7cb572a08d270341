"""The amplitude destination end to end: Segment's Python client -> gateway -> destination ->
a loopback Amplitude HTTP V2 API that enforces the documented schema, limits and errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway import epoch_ms
from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

KEY = "amplitude-test-write-key"
API_KEY = "amp-test-api-key-0123"
INVALID_IDS = {
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "",
    "00000000-0000-0000-0000-000000000000",
    "{}",
    "lmy47d",
    "0",
    "-1",
}


class AmplitudeAPI:
    """Amplitude's HTTP V2 API as documented (AMP-HTTP, AMP-RETRY): JSON body with ``api_key``
    and ``events``; at most 2,000 events and 1 MB (413); each event needs ``event_type`` and a
    valid ``user_id`` or ``device_id`` (ids shorter than ``min_id_length`` are removed); ``time``
    in ms; revenue fields typed; a 400 lists the bad events' indices and ingests nothing;
    ``insert_id`` deduplicated per device."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._seen: set[tuple[Any, Any]] = set()

    def __call__(self, request: ReceivedRequest) -> Answer:
        if request.path not in ("/2/httpapi", "/batch"):
            return Answer(400, {"code": 400, "error": "Invalid request path"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Answer(400, {"code": 400, "error": "Invalid JSON request body"})
        if len(request.body) > 1_000_000:
            return Answer(413, {"code": 413, "error": "Payload too large"})
        try:
            body = request.json()
        except ValueError:
            return Answer(400, {"code": 400, "error": "Invalid JSON request body"})
        if "api_key" not in body:
            return Answer(400, {"code": 400, "error": "Request missing required field", "missing_field": "api_key"})
        if body["api_key"] != API_KEY:
            return Answer(400, {"code": 400, "error": "Invalid API key"})
        events = body.get("events")
        if not isinstance(events, list):
            return Answer(400, {"code": 400, "error": "Request missing required field", "missing_field": "events"})
        if len(events) > 2000:
            return Answer(413, {"code": 413, "error": "Payload too large"})
        min_length = (body.get("options") or {}).get("min_id_length", 5)
        invalid: dict[str, list[int]] = {}
        missing: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            for field in ("user_id", "device_id"):
                value = event.get(field)
                if value is not None and (value in INVALID_IDS or not isinstance(value, str)):
                    invalid.setdefault(field, []).append(index)
                elif isinstance(value, str) and len(value) < min_length:
                    del event[field]  # "removed from the event"
            if not event.get("event_type"):
                missing.setdefault("event_type", []).append(index)
            if not event.get("user_id") and not event.get("device_id"):
                missing.setdefault("user_id", []).append(index)
            if "time" in event and not isinstance(event["time"], int):
                invalid.setdefault("time", []).append(index)
            for field, kind in (
                ("price", (int, float)),
                ("revenue", (int, float)),
                ("quantity", int),
                ("productId", str),
                ("revenueType", str),
                ("session_id", int),
            ):
                if field in event and not isinstance(event[field], kind):
                    invalid.setdefault(field, []).append(index)
            if "currency" in event and not re.fullmatch(r"[A-Z]{3}", str(event["currency"])):
                invalid.setdefault("currency", []).append(index)
        if invalid or missing:
            return Answer(
                400,
                {
                    "code": 400,
                    "error": "Invalid field values on some events",
                    "events_with_invalid_fields": invalid,
                    "events_with_missing_fields": missing,
                },
            )
        for event in events:
            key = (event.get("device_id"), event.get("insert_id"))
            if event.get("insert_id") is None or key not in self._seen:
                self._seen.add(key)
                self.events.append(event)
        return Answer(
            200,
            {
                "code": 200,
                "events_ingested": len(events),
                "payload_size_bytes": len(request.body),
                "server_upload_time": 1,
            },
        )


def config(url: str, extra: str = "") -> str:
    return f"""
[admin]
token = "amplitude-admin-token-0123456789"

[sources.server]
write_key = "{KEY}"

[destinations.amp]
type = "amplitude"
api_key = "{API_KEY}"
endpoint = "{url}"
batch_max_wait_secs = 0.05
retry_initial_secs = 0.01
retry_max_secs = 0.05
timeout_secs = 5.0
{extra}
"""


ORDER = {
    "order_id": "o-1",
    "checkout_id": "c-1",
    "total": 35.5,
    "revenue": 30.0,
    "currency": "eur",
    "products": [
        {"product_id": "p-1", "sku": "S1", "name": "Mug", "price": 10.0, "quantity": 2},
        {"product_id": "p-2", "name": "Tee", "price": 10.0, "quantity": 1},
    ],
}


async def test_every_call_maps_as_segment_documents(tmp_path: Path) -> None:
    api = AmplitudeAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        sent = await gw.python_client(
            KEY,
            lambda c: [
                c.identify(
                    "user-1",
                    {"email": "ada@example.com", "plan": "pro"},
                    anonymous_id="anon-1",
                    context={
                        "device": {"id": "device-1", "model": "Pixel 8", "type": "android"},
                        "os": {"name": "Android", "version": "14"},
                        "locale": "en-US",
                    },
                ),
                c.track("user-1", "Order Completed", ORDER, integrations={"Amplitude": {"session_id": 1700000000000}}),
                c.track("user-1", "Order Refunded", {"order_id": "o-1", "total": 35.5, "currency": "EUR"}),
                c.track("user-1", "Product Viewed", {"product_id": "p-1", "price": 10.0}),
                c.page("user-1", "Docs", "Intro", {"url": "https://ex.com/docs"}),
                c.screen(anonymous_id="anon-2", name="Home"),
                c.group("user-1", "acme", {"name": "Acme"}),
                c.alias("anon-1", "user-1"),
            ],
        )
        await gw.wait_delivered("amp")
        assert gw.destination("amp").status()["calls_skipped"] == 1  # alias: needs Portfolio's /usermap
        [request, *_] = server.requests
        assert request.path == "/2/httpapi"

    by_insert = {event["insert_id"]: event for event in api.events}
    identify, order, refund, viewed, page, screen, group, _alias = sent
    ident = by_insert[identify["messageId"]]
    assert ident["event_type"] == "$identify"
    assert ident["user_properties"] == {"$set": {"email": "ada@example.com", "plan": "pro"}}
    assert (ident["user_id"], ident["device_id"]) == ("user-1", "device-1")  # context.device.id wins
    assert (ident["device_model"], ident["os_name"], ident["os_version"]) == ("Pixel 8", "Android", "14")
    assert (ident["platform"], ident["language"], ident["ip"]) == ("android", "en-US", "127.0.0.1")
    assert abs(ident["time"] - epoch_ms(identify["timestamp"])) < 60_000

    main = by_insert[order["messageId"]]
    assert main["event_type"] == "Order Completed"
    assert main["event_properties"] == ORDER
    assert (main["revenue"], main["revenueType"], main["currency"]) == (30.0, "Purchase", "EUR")
    assert main["session_id"] == 1700000000000
    products = [by_insert[f"{order['messageId']}-{n}"] for n in (0, 1)]
    assert [p["event_type"] for p in products] == ["Product Purchased", "Product Purchased"]
    assert products[0]["event_properties"] == {**ORDER["products"][0], "order_id": "o-1", "checkout_id": "c-1"}
    assert "revenue" not in products[0]  # revenue on the order event unless track_revenue_per_product

    back = by_insert[refund["messageId"]]
    assert (back["revenue"], back["revenueType"]) == (-35.5, "Refund")
    plain = by_insert[viewed["messageId"]]
    assert plain["event_type"] == "Product Viewed" and "revenue" not in plain  # a view is not revenue
    assert plain["event_properties"] == {"product_id": "p-1", "price": 10.0}
    assert by_insert[page["messageId"]]["event_type"] == "Viewed Intro"
    assert by_insert[page["messageId"]]["event_properties"]["url"] == "https://ex.com/docs"
    assert (by_insert[screen["messageId"]]["event_type"], by_insert[screen["messageId"]]["device_id"]) == (
        "Viewed Home",
        "anon-2",
    )
    membership = by_insert[group["messageId"]]
    assert membership["groups"] == {"[Segment] Group": "acme"}
    group_props = by_insert[f"{group['messageId']}-group"]
    assert group_props["event_type"] == "$groupidentify"
    assert group_props["group_properties"] == {"$set": {"name": "Acme"}}


async def test_revenue_per_product(tmp_path: Path) -> None:
    api = AmplitudeAPI()
    extra = "track_revenue_per_product = true"
    async with open_loopback_server(api) as server, run_gateway(config(server.url, extra), data_dir=tmp_path) as gw:
        await gw.send(
            "track",
            {"userId": "user-1", "event": "Order Completed", "properties": ORDER, "messageId": "oc-1"},
            write_key=KEY,
        )
        await gw.wait_delivered("amp")
    by_insert = {event["insert_id"]: event for event in api.events}
    assert "revenue" not in by_insert["oc-1"]
    first, second = by_insert["oc-1-0"], by_insert["oc-1-1"]
    assert (first["price"], first["quantity"], first["revenue"], first["productId"]) == (10.0, 2, 20.0, "p-1")
    assert (second["revenue"], second["revenueType"]) == (10.0, "Purchase")


async def test_a_400_listing_bad_events_dead_letters_them_and_delivers_the_rest(tmp_path: Path) -> None:
    api = AmplitudeAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        batch = [
            {"type": "track", "userId": "user-1", "event": "A", "messageId": "ok-1"},
            {"type": "track", "userId": "undefined", "event": "B", "messageId": "bad-1"},
            {"type": "track", "userId": "user-1", "event": "C", "messageId": "ok-2"},
            {
                "type": "track",
                "userId": "user-1",
                "event": "D",
                "messageId": "bad-2",
                "properties": {"revenue": 5, "currency": "EURO"},
            },
        ]
        batch[3]["event"] = "Order Completed"
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("amp")
        assert [e["insert_id"] for e in api.events] == ["ok-1", "ok-2"]
        assert len(server.requests) == 2  # one refusal, one resend of the rest
        letters = {letter["seq"]: letter for letter in await gw.dead_letters("amp")}
        assert [letters[seq]["error"] for seq in sorted(letters)] == [
            "Amplitude refused the event: invalid user_id",
            "Amplitude refused the event: invalid currency",
        ]
        assert ['"messageId":"bad-1"' in letters[seq]["message"] for seq in sorted(letters)] == [True, False]
        stats = gw.statistics("amp")
        assert (stats["delivered"], stats["dead_lettered"], stats["retries"]) == (2, 2, 0)


async def test_throttling_timeouts_5xx_and_413(tmp_path: Path) -> None:
    api = AmplitudeAPI()
    text = config("URL").replace("timeout_secs = 5.0", "timeout_secs = 1.0")
    async with (
        open_loopback_server(api) as server,
        run_gateway(text.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        server.script(
            Answer(
                429,
                {"code": 429, "error": "Too many requests for some devices and users", "throttled_events": [0]},
                {"Retry-After": "0"},
            ),
            Answer(500, "oops"),
        )
        server.stall()
        server.script(Answer(413, {"code": 413, "error": "Payload too large"}))
        batch = [{"type": "track", "userId": "user-1", "event": "E", "messageId": f"t-{i}"} for i in range(4)]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("amp")
        assert sorted(e["insert_id"] for e in api.events) == ["t-0", "t-1", "t-2", "t-3"]
        sizes = [len(r.json()["events"]) for r in server.requests]
        assert sizes == [4, 4, 4, 4, 2, 2]  # 429, 500, no answer, 413: split in two
        status = (await gw.admin("GET", "/status")).json()["destinations"]["amp"]
        assert {"http_429", "http_500", "timeout"} <= {s["kind"] for s in status["errors"]}


async def test_an_invalid_api_key_is_permanent_and_visible(tmp_path: Path) -> None:
    api = AmplitudeAPI()
    text = config("URL").replace(API_KEY, "wrong-api-key-9876")
    async with (
        open_loopback_server(api) as server,
        run_gateway(text.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        server.script(Answer(403, {"code": 403, "error": "Forbidden"}))
        await gw.send("track", {"userId": "user-1", "event": "A", "messageId": "k-1"}, write_key=KEY)
        await gw.send("track", {"userId": "user-1", "event": "B", "messageId": "k-2"}, write_key=KEY)
        await gw.wait_delivered("amp")
        assert len(await gw.dead_letters("amp")) == 2
        status = (await gw.admin("GET", "/status")).json()["destinations"]["amp"]
        kinds = {s["kind"]: s for s in status["errors"]}
        # A refused key refuses every record alike: the batch is dead-lettered in one request,
        # not sent again record by record.
        assert set(kinds) == {"http_403"} and kinds["http_403"]["retryable"] is False
        assert len(server.requests) == 1
        assert "wrong-api-key-9876" not in str(status)
        assert api.events == []


async def test_a_refused_key_or_a_redirect_dead_letters_the_batch_in_one_request_visible_in_status(
    tmp_path: Path,
) -> None:
    # Amplitude refuses a key with a 400 (AMP-HTTP), and a redirect is not followed: either
    # refuses every record alike, so the batch is dead-lettered at once, not record by record.
    for n, answer in enumerate(
        [Answer(400, {"code": 400, "error": "Invalid API key"}), Answer(301, "", headers={"Location": "/moved"})]
    ):
        async with (
            open_loopback_server(lambda request, answer=answer: answer) as server,
            run_gateway(
                config(server.url).replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5"),
                data_dir=tmp_path / str(n),
            ) as gw,
        ):
            batch = [{"type": "track", "userId": "user-1", "event": "E", "messageId": f"m{i}"} for i in range(5)]
            assert (await gw.batch(batch, write_key=KEY)).status_code == 200
            await gw.wait_delivered("amp")
            assert len(await gw.dead_letters("amp")) == 5
            status = (await gw.admin("GET", "/status")).json()["destinations"]["amp"]
            [error] = status["errors"]
            assert (error["kind"], error["retryable"]) == (["invalid_api_key", "http_301"][n], False)
            assert API_KEY not in str(status)
        assert len(server.requests) == 1
