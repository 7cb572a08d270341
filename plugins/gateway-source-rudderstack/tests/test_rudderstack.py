"""RudderStack's SDKs against the gateway: the official Python SDK (``rudder-sdk-python``,
pinned in the test extras) delivers to the tracking API's ``/v1/batch`` and to the rudderstack
source's data plane; the control plane's sourceConfig has the schema the browser SDK checks;
RudderStack's payload quirks become Segment fields. (The browser SDK runs in Chromium in
``tests/test_rudderstack_browser.py``.)"""

from __future__ import annotations

import json
from typing import Any

import trio

from gateway.testing import TestGateway, run_gateway

SEGMENT_KEY, RUDDER_KEY = "segment-style-write-key", "2AbRudderWriteKey0123"
CONFIG = f"""
[sources.web]
write_key = "{SEGMENT_KEY}"

[sources.site]
type = "rudderstack"
write_key = "{RUDDER_KEY}"
allowed_origins = ["https://shop.example.com"]
name = "Shop"

[destinations.out]
type = "recording"
batch_max_wait_secs = 0.01
"""


async def python_sdk(host: str, write_key: str) -> list[dict[str, Any]]:
    """Make every call with RudderStack's Python SDK pointed at ``host``, flush, and return the
    messages it queued (gzip on, as by default)."""
    from rudderstack.analytics import Client

    errors: list[Exception] = []

    def run() -> list[tuple[bool, dict[str, Any]]]:
        client = Client(write_key, host=host, max_retries=1, on_error=lambda e, _: errors.append(e))
        try:
            results = [
                client.identify("user-1", {"email": "u1@example.com", "plan": "pro"}),
                client.track("user-1", "Order Completed", {"order_id": "o-1", "total": 30.5}),
                client.page("user-1", "Docs", "Install", {"path": "/docs"}),
                client.screen("user-1", "Home", properties={"tab": "feed"}),
                client.group("user-1", "acme", {"name": "Acme"}),
                client.alias("anon-7", "user-1"),
                client.track(event="Signed Out", anonymous_id="anon-7"),
            ]
            client.flush()
        finally:
            client.join()
        return results

    results = await trio.to_thread.run_sync(run)
    assert all(ok for ok, _ in results) and not errors, errors
    return [message for _, message in results]


def check_delivered(sent: list[dict[str, Any]], delivered: list[dict[str, Any]], *, rudderstack: bool) -> None:
    by_id = {m["messageId"]: m for m in delivered}
    assert sorted(by_id) == sorted(m["messageId"] for m in sent)
    for message in sent:
        got = by_id[message["messageId"]]
        for key in ("type", "userId", "anonymousId", "event", "properties", "groupId", "previousId", "name"):
            assert got.get(key) == message.get(key), (key, got, message)
        traits = message.get("traits")
        if rudderstack and message["type"] == "identify":  # the SDK sends them in context.traits
            traits = message["context"]["traits"]
        assert got.get("traits") == traits, (got, message)
        assert got["context"]["library"]["name"] == "analytics-python"
        assert got["channel"] == "server"  # RudderStack's own field, kept
        assert got["originalTimestamp"] and got["receivedAt"] and got["timestamp"]


async def test_the_python_sdk_delivers_to_the_tracking_api_batch_endpoint() -> None:
    async with run_gateway(CONFIG) as gw:
        sent = await python_sdk(gw.url, SEGMENT_KEY)
        check_delivered(sent, await gw.wait_recorded("out", len(sent)), rudderstack=False)


async def test_the_python_sdk_delivers_to_the_rudderstack_data_plane() -> None:
    async with run_gateway(CONFIG) as gw:
        sent = await python_sdk(f"{gw.url}/rudderstack", RUDDER_KEY)
        delivered = await gw.wait_recorded("out", len(sent))
        check_delivered(sent, delivered, rudderstack=True)
        # The identify's traits are Segment's top-level traits.
        [identify] = [m for m in delivered if m["type"] == "identify"]
        assert identify["traits"] == {"email": "u1@example.com", "plan": "pro"}


async def source_config(gw: TestGateway, **kwargs: Any) -> Any:
    return await gw.request(
        "GET",
        "/rudderstack/sourceConfig/",
        params={
            "p": "npm",
            "v": "3.34.1",
            "build": "modern",
            "writeKey": RUDDER_KEY,
            "lockIntegrationsVersion": "true",
        },
        **kwargs,
    )


async def test_the_source_config_has_the_schema_the_browser_sdk_checks() -> None:
    async with run_gateway(CONFIG) as gw:
        answer = await source_config(gw, headers={"Origin": "https://shop.example.com"})
        assert answer.status_code == 200
        source = answer.json()["source"]
        # @rudderstack/analytics-js 3.34.1, isValidSourceConfig: an object source with an id, a
        # config object and a destinations array; enabled (false disables the SDK).
        assert (source["id"], source["name"], source["enabled"]) == ("site", "Shop", True)
        assert isinstance(source["config"], dict) and source["destinations"] == []
        assert source["config"]["statsCollection"]["errors"]["enabled"] is False
        assert answer.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
        # The SDK preflights it (it sends Authorization); another site gets no CORS and a 403.
        preflight = await gw.request(
            "OPTIONS",
            "/rudderstack/sourceConfig/",
            headers={
                "Origin": "https://shop.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["Access-Control-Allow-Headers"] == "authorization"
        elsewhere = await source_config(gw, headers={"Origin": "https://evil.example.net"})
        assert elsewhere.status_code == 403 and "Access-Control-Allow-Origin" not in elsewhere.headers
        unknown = await gw.request("GET", "/rudderstack/sourceConfig/", params={"writeKey": SEGMENT_KEY})
        assert unknown.status_code == 401  # a tracking-API key is not a rudderstack source's


async def test_rudderstack_payloads_become_segment_messages() -> None:
    event = {
        "type": "track",
        "event": "Clicked",
        "properties": {"n": 1},
        "userId": "",
        "anonymousId": "anon-1",
        "channel": "web",
        "rudderId": "r-1",
        "originalTimestamp": "2026-01-02T03:04:05.000Z",
        "sentAt": "2026-01-02T03:04:06.000Z",
        "messageId": "m-beacon-1",
        "context": {"library": {"name": "RudderLabs JavaScript SDK", "version": "3.34.1"}},
    }
    async with run_gateway(CONFIG) as gw:
        # A beacon batch: text/plain, no Authorization (sendBeacon cannot set one), key in the URL.
        answer = await gw.request(
            "POST",
            f"/rudderstack/beacon/v1/batch?writeKey={RUDDER_KEY}",
            content=json.dumps({"batch": [event], "sentAt": "2026-01-02T03:04:06.000Z"}),
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example.com"},
        )
        assert (answer.status_code, answer.text) == (200, "OK")
        refused = await gw.request("POST", "/rudderstack/v1/track?writeKey=nope", json=event)
        assert refused.status_code == 401
        [message] = await gw.wait_recorded("out", 1)
    assert "userId" not in message and message["anonymousId"] == "anon-1"
    assert message["originalTimestamp"] == "2026-01-02T03:04:05.000Z"
    assert (message["channel"], message["rudderId"]) == ("web", "r-1")
    # Skew-corrected from the client's clock, as for Segment's clients: sent 1 s after the call.
    assert message["timestamp"] < message["receivedAt"]
