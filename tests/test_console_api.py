"""The console's data on the admin API, against a real in-process gateway: the Source Debugger's
recent calls and live stream (accepted, rejected, filtered; a slow reader loses rows as a gap,
never slows ingest), and Event Delivery's series and errors (kept across a restart)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from gateway import (
    ComponentConfig,
    DeliveryError,
    Destination,
    DestinationContext,
    DestinationType,
    Exchange,
    MappedContexts,
    Record,
    hookimpl,
)
from gateway.testing import TestGateway, run_gateway

KEY = "console-write-key-0123456789"
OTHER_KEY = "console-other-key-0123456789"
TOKEN = "console-admin-token-0123456789"

CONFIG = f"""
[admin]
token = "{TOKEN}"

[filters.schema]
type = "schema"
block_track_events = ["Blocked Event"]

[sources.web]
write_key = "{KEY}"
filters = ["schema"]

[sources.other]
write_key = "{OTHER_KEY}"

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
retry_initial_secs = 0.01
retry_max_secs = 0.02
"""


def admin_client(gw: TestGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(gw.admin_url), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


async def events(gw: TestGateway, source: str = "web", **params: Any) -> dict[str, Any]:
    response = await gw.admin("GET", f"/sources/{source}/events", params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_debugger_lists_accepted_rejected_and_filtered_calls_newest_first(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw:
        # A plain batch (the fast path), then one with a bad item (200 with rejected).
        ok = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-1", "writeKey": KEY}
        assert (await gw.batch([ok], write_key=KEY)).status_code == 200
        bad_item = {"type": "track", "userId": "u2", "messageId": "m-2"}  # no event
        good = {"type": "page", "anonymousId": "a3", "name": "Home", "messageId": "m-3"}
        answer = await gw.batch([bad_item, good], write_key=KEY)
        assert answer.status_code == 200 and answer.json()["rejected"][0]["code"] == "event_not_defined"
        # A whole request refused: a single call with no userId (400), a body that is not JSON (400).
        assert (await gw.send("identify", {"traits": {"a": 1}, "messageId": "m-4"}, write_key=KEY)).status_code == 400
        not_json = await gw.request(
            "POST", "/v1/batch", content=b'{"writeKey": "' + KEY.encode() + b'", "batch": [', auth=(KEY, "")
        )
        assert not_json.status_code == 400
        # Dropped by the source's schema filter, with its reason.
        blocked = {"userId": "u5", "event": "Blocked Event", "messageId": "m-5"}
        assert (await gw.send("track", blocked, write_key=KEY)).status_code == 200
        # A pixel: the same core path.
        data = base64.b64encode(
            json.dumps({"writeKey": KEY, "userId": "u6", "event": "Opened", "messageId": "m-6"}).encode()
        )
        assert (await gw.request("GET", f"/v1/pixel/track?data={data.decode()}")).status_code == 200

        seen = await events(gw)
        assert seen["source"] == "web" and seen["dropped"] == 0
        rows = seen["events"]
        assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)
        by_message = {row["messageId"]: row for row in rows if row["messageId"]}
        assert by_message["m-1"]["outcome"] == "accepted"
        assert (by_message["m-1"]["type"], by_message["m-1"]["event"], by_message["m-1"]["userId"]) == (
            "track",
            "Signed Up",
            "u1",
        )
        assert by_message["m-1"]["message"]["receivedAt"]  # as stored: server fields set
        assert (by_message["m-2"]["outcome"], by_message["m-2"]["code"]) == ("rejected", "event_not_defined")
        assert by_message["m-2"]["reason"]
        assert (by_message["m-3"]["outcome"], by_message["m-3"]["event"], by_message["m-3"]["anonymousId"]) == (
            "accepted",
            "Home",
            "a3",
        )
        assert (by_message["m-4"]["outcome"], by_message["m-4"]["type"]) == ("rejected", None)
        assert by_message["m-4"]["code"] == "no_user_anon_id"
        assert (by_message["m-5"]["outcome"], by_message["m-5"]["reason"]) == ("filtered", "event_setting")
        assert by_message["m-6"]["outcome"] == "accepted"
        [unreadable] = [row for row in rows if row["code"] == "invalid_json"]
        assert unreadable["outcome"] == "rejected" and isinstance(unreadable["message"], str)
        assert all(isinstance(row["at"], float) for row in rows)
        # Write keys never appear: not from the body, not from the raw text of a bad body.
        everything = (await gw.admin("GET", "/sources/web/events")).text
        assert KEY not in everything
        assert (await events(gw, "other"))["events"] == []


async def test_the_debugger_shows_a_duplicate_as_one_not_as_a_second_accepted_call(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw:
        first = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "d-1"}
        assert (await gw.batch([first], write_key=KEY)).status_code == 200
        # A retry of it beside a new call (the fast path), then a single call of it.
        second = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "d-2"}
        assert (await gw.batch([first, second], write_key=KEY)).status_code == 200
        assert (await gw.send("track", first, write_key=KEY)).status_code == 200
        rows = (await events(gw))["events"]
        outcomes = [(row["messageId"], row["outcome"]) for row in reversed(rows)]
        assert outcomes == [("d-1", "accepted"), ("d-1", "duplicate"), ("d-2", "accepted"), ("d-1", "duplicate")]
        [duplicate, *_] = [row for row in rows if row["outcome"] == "duplicate"]
        assert "dedup window" in duplicate["reason"]


async def test_debugger_keeps_the_last_500_calls_and_counts_the_rest(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw:
        for start in range(0, 600, 200):
            batch = [
                {"type": "track", "userId": "u", "event": "E", "messageId": f"m-{i}"} for i in range(start, start + 200)
            ]
            assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        kept = await events(gw)
        assert len(kept["events"]) == 500 and kept["dropped"] == 100
        assert kept["events"][0]["messageId"] == "m-599" and kept["events"][-1]["messageId"] == "m-100"
        ten = await events(gw, limit=10)
        assert [row["messageId"] for row in ten["events"]] == [f"m-{i}" for i in range(599, 589, -1)]
        assert ten["dropped"] == 590
        assert (await gw.admin("GET", "/sources/web/events", params={"limit": "many"})).status_code == 400


async def test_unknown_sources_are_404(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw:
        for path in ("/sources/nope/events", "/sources/nope/stream"):
            response = await gw.admin("GET", path)
            assert response.status_code == 404 and response.json()["code"] == "no_such_source"
        assert (await gw.request("GET", "/sources/web/events")).status_code == 404  # not on the public API
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{gw.admin_url}/sources/web/events")).status_code == 401


class SSE:
    """A server-sent events reader: (event, data) pairs, comments skipped."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def next(self) -> tuple[str, Any]:
        event, data = "message", []
        async for line in self._lines:
            if line == "":
                if data:
                    return event, json.loads("\n".join(data))
                event = "message"
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        raise EOFError


async def test_stream_sends_each_call_as_it_happens(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw, admin_client(gw) as admin:
        async with admin.stream("GET", "/sources/web/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SSE(response.aiter_lines())
            assert (
                await gw.send("track", {"userId": "u", "event": "Live", "messageId": "s-1"}, write_key=KEY)
            ).status_code == 200
            assert (await gw.send("track", {"userId": "u", "messageId": "s-2"}, write_key=KEY)).status_code == 400
            assert (
                await gw.send("track", {"userId": "u", "event": "Other source"}, write_key=OTHER_KEY)
            ).status_code == 200
            with trio.fail_after(5):
                event, first = await reader.next()
                assert (event, first["messageId"], first["outcome"], first["event"]) == (
                    "call",
                    "s-1",
                    "accepted",
                    "Live",
                )
                event, second = await reader.next()
                assert (event, second["messageId"], second["outcome"], second["code"]) == (
                    "call",
                    "s-2",
                    "rejected",
                    "event_not_defined",
                )
        # Reconnecting with Last-Event-ID first gets the kept calls after that one.
        async with admin.stream("GET", "/sources/web/stream", headers={"Last-Event-ID": str(first["id"])}) as again:
            with trio.fail_after(5):
                event, replayed = await SSE(again.aiter_lines()).next()
            assert (event, replayed["messageId"]) == ("call", "s-2")


async def test_a_slow_stream_loses_rows_as_a_gap_while_ingest_goes_on(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw, admin_client(gw) as admin:
        # A browser that stopped reading: connected, subscribed, never reads a byte.
        host, port = str(gw.admin_url).removeprefix("http://").rsplit(":", 1)
        stalled = trio.socket.socket()
        await stalled.connect((host, int(port)))
        await stalled.send(
            f"GET /sources/web/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            async with admin.stream("GET", "/sources/web/stream") as response:
                reader = SSE(response.aiter_lines())
                # One request of 300 calls: more than a subscriber's buffer holds.
                batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"b-{i}"} for i in range(300)]
                assert (await gw.batch(batch, write_key=KEY)).status_code == 200
                with trio.fail_after(10):
                    calls = []
                    event, data = await reader.next()
                    while event == "call":
                        calls.append(data["messageId"])
                        event, data = await reader.next()
                    assert event == "gap" and data["dropped"] == 300 - len(calls) > 0
                    assert calls == [f"b-{i}" for i in range(len(calls))]
                    # The next call comes after the gap.
                    assert (
                        await gw.send("track", {"userId": "u", "event": "After", "messageId": "after"}, write_key=KEY)
                    ).status_code == 200
                    event, data = await reader.next()
                    assert (event, data["messageId"]) == ("call", "after")
                # Ingest goes on at full speed with the stalled reader attached: its rows are dropped.
                with trio.fail_after(30):
                    for round_ in range(40):
                        many = [
                            {"type": "track", "userId": "u", "event": "E" * 200, "messageId": f"r{round_}-{i}"}
                            for i in range(100)
                        ]
                        assert (await gw.batch(many, write_key=KEY)).status_code == 200
        finally:
            stalled.close()
        metrics = (await gw.request("GET", "/metrics")).text
        [family] = [f for f in text_string_to_metric_families(metrics) if f.name == "gateway_console_tap_dropped"]
        assert sum(s.value for s in family.samples if s.name.endswith("_total")) >= 3900
        assert msgspec.json.decode((await gw.admin("GET", "/sources/web/events", params={"limit": 1})).content)[
            "events"
        ]


class _Vendor(Destination):
    """A vendor that answers 503 to the first send, then refuses ``bad-*`` events with a 400
    (its request carrying an API key) and takes the rest."""

    def __init__(self, config: ComponentConfig, context: DestinationContext) -> None:
        self.sends = 0

    async def send(self, batch: Sequence[Record]) -> None:
        self.sends += 1
        exchange = Exchange.of(
            "POST",
            "https://api.example.com/track?key=VENDOR-SECRET",
            headers={"Authorization": "Bearer VENDOR-SECRET"},
            body=b'{"events": [' + batch[0].body + b"]}",
            status=503 if self.sends == 1 else 400,
            response_body=b'{"error": "try later"}' if self.sends == 1 else b'{"error": "bad event"}',
            secrets=["VENDOR-SECRET"],
        )
        if self.sends == 1:
            raise DeliveryError("503 Service Unavailable", retryable=True, kind="http_503", exchange=exchange)
        if any(record.message()["messageId"].startswith("bad-") for record in batch):
            raise DeliveryError("400 Bad Request: bad event", retryable=False, kind="http_400", exchange=exchange)


class _VendorPlugin:
    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [DestinationType(name="vendor", config_type=ComponentConfig, factory=_Vendor)]


DELIVERY_CONFIG = f"""
[admin]
token = "{TOKEN}"

[sources.web]
write_key = "{KEY}"

[destinations.vendor]
type = "vendor"
batch_max_wait_secs = 0.0
batch_max_messages = 1
retry_initial_secs = 0.01
retry_max_secs = 0.02
"""


async def delivery(gw: TestGateway, destination: str = "vendor", range_: str = "1h") -> dict[str, Any]:
    response = await gw.admin("GET", f"/destinations/{destination}/delivery", params={"range": range_})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_event_delivery_counts_latency_and_errors_and_keeps_them_across_a_restart(tmp_path: Path) -> None:
    async with run_gateway(DELIVERY_CONFIG, data_dir=tmp_path, plugins=[_VendorPlugin()]) as gw:
        calls = [
            {"type": "track", "userId": "u", "event": "E", "messageId": "ok-1"},
            {"type": "track", "userId": "u", "event": "E", "messageId": "bad-1", "properties": {"why": "x"}},
            {"type": "track", "userId": "u", "event": "E", "messageId": "ok-2"},
            {"type": "track", "userId": "u", "event": "E", "messageId": "skip", "integrations": {"All": False}},
        ]
        assert (await gw.batch(calls, write_key=KEY)).status_code == 200
        await gw.wait_delivered("vendor")
        report = await delivery(gw)
    assert (report["destination"], report["range"], report["bucket_secs"]) == ("vendor", "1h", 60)
    totals = report["totals"]
    assert (totals["delivered"], totals["dead_lettered"], totals["retries"]) == (2, 1, 1)
    assert totals["filtered"] == {"filtered_by_integrations_object": 1}
    assert isinstance(totals["p95_latency_ms"], float) and totals["p95_latency_ms"] > 0
    assert len(report["series"]) == 60
    assert [b["t"] for b in report["series"]] == sorted(b["t"] for b in report["series"])
    assert all(b["t"] % 60_000 == 0 for b in report["series"])
    assert sum(b["delivered"] for b in report["series"]) == 2
    assert sum(b["filtered"] for b in report["series"]) == 1
    assert sum(b["dead_lettered"] for b in report["series"]) == 1
    assert any(b["p95_latency_ms"] is not None for b in report["series"])
    errors = {error["kind"]: error for error in report["errors"]}
    assert set(errors) == {"http_503", "http_400"}
    refused = errors["http_400"]
    assert (refused["count"], refused["retryable"]) == (1, False)
    assert refused["last_error"] == "400 Bad Request: bad event" and refused["last_at"] > 0
    assert refused["exchange"]["sent"]["messageId"] == "bad-1"
    assert refused["exchange"]["request"].startswith("POST https://api.example.com/track?key=***")
    assert refused["exchange"]["response"].startswith("400")
    assert errors["http_503"]["retryable"] is True
    assert "VENDOR-SECRET" not in json.dumps(report)

    # Restarted on the same data folder: the charts and the error samples are still there.
    async with run_gateway(DELIVERY_CONFIG, data_dir=tmp_path, plugins=[_VendorPlugin()]) as gw:
        again = await delivery(gw)
        assert again["totals"] == totals
        assert {e["kind"]: e["count"] for e in again["errors"]} == {"http_503": 1, "http_400": 1}
        assert again["errors"][0]["exchange"] is not None
        day = await delivery(gw, range_="24h")
        assert (day["bucket_secs"], len(day["series"])) == (600, 144)
        assert day["totals"]["delivered"] == 2
        week = await delivery(gw, range_="7d")
        assert (week["bucket_secs"], len(week["series"])) == (3600, 168)
        assert len((await delivery(gw, range_="10m"))["series"]) == 10
        assert (await gw.admin("GET", "/destinations/vendor/delivery", params={"range": "2w"})).status_code == 400
        missing = await gw.admin("GET", "/destinations/nope/delivery")
        assert missing.status_code == 404 and missing.json()["code"] == "no_such_destination"


async def test_delivery_overview_follows_the_books(tmp_path: Path) -> None:
    config = CONFIG + '\n[destinations.picky]\ntype = "recording"\nbatch_max_wait_secs = 0.0\ndisplay_name = "Picky"\n'
    async with run_gateway(config, data_dir=tmp_path) as gw:
        calls = [
            {"type": "track", "userId": "u", "event": "A", "messageId": "o-1"},
            {"type": "track", "userId": "u", "event": "A", "messageId": "o-1"},  # a duplicate
            {"type": "track", "userId": "u", "event": "B", "messageId": "o-2", "integrations": {"Picky": False}},
            {"type": "track", "userId": "u", "messageId": "o-3"},  # rejected: no event
            {"type": "track", "userId": "u", "event": "Blocked Event", "messageId": "o-4"},  # filtered at the source
        ]
        assert (await gw.batch(calls, write_key=KEY)).status_code == 200
        await gw.wait_delivered()
        response = await gw.admin("GET", "/sources/web/overview", params={"range": "1h"})
        assert response.status_code == 200, response.text
        view = response.json()
        assert (view["source"], view["range"]) == ("web", "1h")
        assert view["rejected"] == {"event_not_defined": 1}
        assert view["filtered"] == {"event_setting": 1}
        assert (view["stored"], view["duplicates"], view["received"]) == (2, 1, 5)
        assert view["destinations"]["rec"] == {"filtered": {}, "failed": 0, "delivered": 2, "pending": 0}
        assert view["destinations"]["picky"] == {
            "filtered": {"filtered_by_integrations_object": 1},
            "failed": 0,
            "delivered": 1,
            "pending": 0,
        }
        assert view["cut"]["source_books_since_ms"] <= view["cut"]["since_ms"]
        # The same books the audit reads.
        audit = (await gw.admin("GET", "/audit")).json()
        [web] = [s for s in audit["sources"] if s["source"] == "web"]
        assert (web["stored"], web["duplicates"], web["filtered"]) == (2, 1, {"event_setting": 1})
        assert (await events(gw, "other"))["events"] == []
        assert (await gw.admin("GET", "/sources/other/overview")).json()["destinations"] == {}
        assert (await gw.admin("GET", "/sources/web/overview", params={"range": "1y"})).status_code == 400
        assert (await gw.admin("GET", "/sources/nope/overview")).status_code == 404


async def test_schema_lists_events_properties_and_what_the_plan_does(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"rules": [{"type": "TRACK", "key": "Signed Up", "jsonSchema": {}}]}))
    config = f"""
[admin]
token = "{TOKEN}"

[filters.plan]
type = "tracking_plan"
plan = {json.dumps(str(plan))}

[filters.schema]
type = "schema"
block_track_events = ["Blocked Event"]

[sources.web]
write_key = "{KEY}"
inventory = true
filters = ["plan", "schema"]

[sources.other]
write_key = "{OTHER_KEY}"

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path / "data") as gw:
        calls = [
            {"type": "track", "userId": "u", "event": "Signed Up", "properties": {"plan": "pro"}},
            {"type": "track", "userId": "u", "event": "Signed Up", "properties": {"plan": "pro", "seats": 3}},
            {"type": "track", "userId": "u", "event": "Clicked", "properties": {"x": 1}},
            {"type": "track", "userId": "u", "event": "Blocked Event"},
            {"type": "identify", "userId": "u", "traits": {"name": "Ada"}},
        ]
        assert (await gw.batch(calls, write_key=KEY)).status_code == 200
        response = await gw.admin("GET", "/sources/web/schema")
        assert response.status_code == 200, response.text
        schema = response.json()
        assert schema["source"] == "web" and schema["inventory"] is True
        by_event = {(e["type"], e["event"]): e for e in schema["events"]}
        signed_up = by_event[("track", "Signed Up")]
        assert (signed_up["count"], signed_up["plan"]) == (2, "allowed")
        assert {p["name"]: p["count"] for p in signed_up["properties"]} == {"plan": 2, "seats": 1}
        assert all(p["last_seen"] > 0 for p in signed_up["properties"])
        assert by_event[("track", "Clicked")]["plan"] == "omitted"
        assert by_event[("track", "Blocked Event")]["plan"] == "blocked"
        identify = by_event[("identify", None)]
        assert identify["count"] == 1 and [p["name"] for p in identify["properties"]] == ["name"]
        other = (await gw.admin("GET", "/sources/other/schema")).json()
        assert (other["inventory"], other["events"]) == (False, [])
        assert (await gw.admin("GET", "/sources/nope/schema")).status_code == 404


async def test_a_deletion_request_takes_the_user_out_of_the_console(tmp_path: Path) -> None:
    """The debugger's kept calls and the error samples (what was sent, the request) hold
    events: deleting a user removes theirs, in memory and on disk, and keeps the others'."""
    async with run_gateway(DELIVERY_CONFIG, data_dir=tmp_path, plugins=[_VendorPlugin()]) as gw:
        calls = [
            {"type": "track", "userId": "ann-7731", "event": "E", "messageId": "ok-1"},
            {"type": "track", "userId": "ann-7731", "event": "E", "messageId": "bad-1"},
        ]
        assert (await gw.batch(calls, write_key=KEY)).status_code == 200
        await gw.wait_delivered("vendor")
        assert "ann-7731" in json.dumps((await delivery(gw))["errors"])
        assert len((await events(gw))["events"]) == 2
        # A destination's memo of mapped contexts (by their raw JSON: IP, device, traits) too.
        memo: MappedContexts[dict[str, str]] = MappedContexts()
        memo[b'{"ip":"203.0.113.9","traits":{"email":"ann@example.com"}}'] = {"ip": "203.0.113.9"}
        deleted = await gw.admin("POST", "/privacy/delete", json={"userId": "ann-7731", "keepCollecting": True})
        assert deleted.status_code == 200, deleted.text
        assert not memo
        bob = {"type": "track", "userId": "bob-1", "event": "E", "messageId": "ok-3"}
        assert (await gw.batch([bob], write_key=KEY)).status_code == 200
        await gw.wait_delivered("vendor")
        report = await delivery(gw)
        assert {e["kind"]: e["count"] for e in report["errors"]} == {"http_503": 1, "http_400": 1}  # counts stay
        assert "ann-7731" not in json.dumps(report)
        assert "ann-7731" not in (await gw.admin("GET", "/status")).text
        assert [e["userId"] for e in (await events(gw))["events"]] == ["bob-1"]
    async with run_gateway(DELIVERY_CONFIG, data_dir=tmp_path, plugins=[_VendorPlugin()]) as gw:
        assert "ann-7731" not in json.dumps(await delivery(gw))


async def test_replays_list_their_progress(tmp_path: Path) -> None:
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw:
        batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"p-{i}"} for i in range(3)]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("rec")
        assert (await gw.admin("GET", "/replays")).json() == {"replays": []}
        gw.recorder("rec").fail_next(10_000)  # the replay keeps retrying its first batch
        started = await gw.admin("POST", "/replays", json={"destination": "rec", "since_ms": 0})
        assert started.status_code == 200 and started.json()["replay"] is not None
        [replay] = (await gw.admin("GET", "/replays")).json()["replays"]  # listed as soon as it starts
        assert replay["destination"] == "rec" and replay["name"].startswith("replay:rec:")
        assert replay["end_seq"] - replay["start_seq"] == 3
        assert replay["cursor"] == replay["start_seq"] and replay["progress"] == 0.0
        assert (await gw.admin("POST", "/replays/cancel", json={"destination": "rec"})).json()["cancelled"] == 1
        assert (await gw.admin("GET", "/replays")).json() == {"replays": []}


async def test_every_source_type_feeds_the_debugger_through_the_core(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "hooks.py").write_text(
        "from gateway_source_function import track\n\n"
        "def on_request(request):\n"
        "    hook = request.json()\n"
        "    if hook.get('boom'):\n"
        "        raise ValueError('the function failed')\n"
        "    return [track('Ticket Opened', userId=hook['user'], messageId=hook['id'])]\n"
    )
    config = f"""
[admin]
token = "{TOKEN}"

[sources.site]
type = "rudderstack"
write_key = "rudder-key-0123456789"

[sources.helpdesk]
type = "function"
write_key = "helpdesk-token-0123456789"
function = "hooks:on_request"
path = {json.dumps(str(functions))}

[destinations.rec]
type = "recording"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path / "data") as gw:
        rudder = {"type": "track", "event": "Clicked", "anonymousId": "a1", "messageId": "r-1"}
        answer = await gw.request("POST", "/rudderstack/v1/track", json=rudder, auth=("rudder-key-0123456789", ""))
        assert answer.status_code == 200, answer.text
        bad = {"type": "track", "anonymousId": "a1", "messageId": "r-2"}  # no event
        await gw.request("POST", "/rudderstack/v1/batch", json={"batch": [bad]}, auth=("rudder-key-0123456789", ""))
        hook = "/v1/sources/helpdesk/webhook?token=helpdesk-token-0123456789"
        assert (await gw.request("POST", hook, json={"user": "u1", "id": "f-1"})).status_code == 200
        assert (await gw.request("POST", hook, json={"boom": True})).status_code == 500
        site = {row["messageId"]: row for row in (await events(gw, "site"))["events"]}
        assert (site["r-1"]["outcome"], site["r-1"]["event"]) == ("accepted", "Clicked")
        assert (site["r-2"]["outcome"], site["r-2"]["code"]) == ("rejected", "event_not_defined")
        helpdesk = (await events(gw, "helpdesk"))["events"]
        assert [(row["outcome"], row["code"]) for row in helpdesk] == [
            ("rejected", "raw_dead_lettered"),
            ("accepted", None),
        ]
        assert "the function failed" in helpdesk[0]["reason"]
        assert '{"boom":true}' in json.dumps(helpdesk[0]["message"], separators=(",", ":")).replace("\\", "")
        assert helpdesk[1]["messageId"] == "f-1"
        everything = (await gw.admin("GET", "/sources/helpdesk/events")).text
        assert "helpdesk-token-0123456789" not in everything


class _HookConfig(ComponentConfig):
    url: str


class _Hook(Destination):
    """A webhook that refuses everything, naming its URL in the error and in the sample, as the
    http destination does."""

    def __init__(self, config: _HookConfig, context: DestinationContext) -> None:
        self.url = config.url

    async def send(self, batch: Sequence[Record]) -> None:
        echo = f"nope: no hook at {urlsplit(self.url).path}".encode()  # its answer names the path
        exchange = Exchange.of("POST", self.url, body=b"{}", status=500, response_body=echo)
        raise DeliveryError(f"HTTP 500 from {self.url}: nope", retryable=False, kind="http_500", exchange=exchange)


class _HookPlugin:
    @hookimpl
    def gateway_destination_types(self) -> list[DestinationType]:
        return [DestinationType(name="hook", config_type=_HookConfig, factory=_Hook)]


async def test_a_destination_url_kept_secret_in_the_config_stays_secret_in_errors(tmp_path: Path) -> None:
    """A webhook URL given as a secret reference (its path is the credential, as Slack's are) is
    ``***`` in GET /config, so it is in the errors, samples and dead letters the console shows
    too; a password in a URL (``user:password@``) never shows either."""
    secret_file = tmp_path / "hook_url"
    secret_file.write_text("https://hooks.example.com/services/HOOK-PATH-SECRET?sig=HOOK-SIG-SECRET")
    config = f"""
[admin]
token = "{TOKEN}"

[sources.web]
write_key = "{KEY}"

[destinations.hook]
type = "hook"
url = {{ file = "{secret_file}" }}
batch_max_wait_secs = 0.0

[destinations.plain]
type = "hook"
url = "https://bob:URL-PASSWORD-SECRET@hooks.example.com/in"
batch_max_wait_secs = 0.0
"""
    async with run_gateway(config, data_dir=tmp_path / "data", plugins=[_HookPlugin()]) as gw:
        assert (await gw.batch([{"type": "track", "userId": "u", "event": "E"}], write_key=KEY)).status_code == 200
        await gw.wait_delivered("hook")
        await gw.wait_delivered("plain")
        shown = {
            path: (await gw.admin("GET", path)).text
            for path in (
                "/status",
                "/destinations/hook/delivery",
                "/destinations/plain/delivery",
                "/dead-letters",
                "/console/",
                "/config",
            )
        }
    assert "***" in shown["/destinations/hook/delivery"] and "hooks.example.com" in shown["/status"]
    for path, text in shown.items():
        for secret in ("HOOK-PATH-SECRET", "HOOK-SIG-SECRET", "URL-PASSWORD-SECRET"):
            assert secret not in text, f"{secret} shown by GET {path}"


async def test_write_keys_anywhere_in_a_call_are_not_shown(tmp_path: Path) -> None:
    """A write key nested in a call (an item's context, a whole batch refused) is not shown either."""
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw:
        nested = {
            "type": "track",
            "userId": "u",
            "event": "Nested",
            "context": {"writeKey": OTHER_KEY},
            "properties": {"items": [{"write_key": OTHER_KEY}]},
        }
        assert (await gw.batch([nested], write_key=KEY)).status_code == 200
        body = json.dumps({"batch": {"writeKey": OTHER_KEY}}).encode()
        assert (await gw.request("POST", "/v1/batch", content=body, auth=(KEY, ""))).status_code == 400
        rows = (await events(gw))["events"]
        assert {row["outcome"] for row in rows} == {"accepted", "rejected"}
        assert OTHER_KEY not in (await gw.admin("GET", "/sources/web/events")).text


async def test_streams_past_the_limit_are_refused(tmp_path: Path, monkeypatch: Any) -> None:
    """Each stream holds a bounded buffer, and their number is bounded too: past it, 429."""
    from gateway.ops import console_api

    monkeypatch.setattr(console_api, "MAX_STREAMS", 2)
    async with run_gateway(CONFIG, data_dir=tmp_path) as gw, admin_client(gw) as admin:
        async with (
            admin.stream("GET", "/sources/web/stream") as one,
            admin.stream("GET", "/sources/other/stream") as two,
        ):
            # The readers are kept until the refusal: an abandoned one is finalized by trio soon
            # after, which closes its connection, and the server then lets a third stream in.
            readers = [response.aiter_raw() for response in (one, two)]
            for response, reader in zip((one, two), readers, strict=True):
                assert response.status_code == 200
                await reader.__anext__()  # subscribed
            refused = await admin.get("/sources/web/stream")
            assert refused.status_code == 429 and refused.headers["retry-after"]
            for reader in readers:
                await reader.aclose()
        with trio.fail_after(10):
            while True:
                async with admin.stream("GET", "/sources/web/stream") as again:
                    if again.status_code == 200:
                        break
                await trio.testing.wait_all_tasks_blocked()  # the server has seen the streams end
