"""Adversarial checks of the amplitude destination (issue 16 review), end to end: Segment's
Python client -> gateway -> destination -> the loopback HTTP V2 API of test_amplitude."""

from __future__ import annotations

from pathlib import Path

from gateway.testing import Answer, open_loopback_server, run_gateway

from .test_amplitude import KEY, ORDER, AmplitudeAPI, config


async def test_options_under_actions_amplitude_enable_the_destination_they_configure(tmp_path: Path) -> None:
    # The destination reads its options under "Actions Amplitude" as well as "Amplitude"
    # (Segment's Actions default: session_id <- integrations["Actions Amplitude"].session_id),
    # and an object value enables a destination (segment-api.md 2.4). With All: false, an
    # event that gives Amplitude a session under that name is meant for Amplitude: the core
    # only matches the display name "Amplitude" and filters it out.
    api = AmplitudeAPI()
    async with open_loopback_server(api) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        [sent] = await gw.python_client(
            KEY,
            lambda c: [
                c.track(
                    "user-1",
                    "Song Played",
                    {"n": 1},
                    anonymous_id="device-1",
                    integrations={"All": False, "Actions Amplitude": {"session_id": 1700000000000}},
                )
            ],
        )
        await gw.wait_delivered("amp")
    assert [(e["event_type"], e["insert_id"], e.get("session_id")) for e in api.events] == [
        ("Song Played", sent["messageId"], 1700000000000)
    ]


async def test_an_order_refunded_keeps_its_negative_revenue_when_revenue_is_tracked_per_product(tmp_path: Path) -> None:
    # track_revenue_per_product = true moves an order's revenue from the order event onto its
    # "Product Purchased" events; Order Refunded has no product events, so its refund is
    # dropped from both: Amplitude's revenue keeps counting refunded orders.
    api = AmplitudeAPI()
    extra = "track_revenue_per_product = true"
    async with open_loopback_server(api) as server, run_gateway(config(server.url, extra), data_dir=tmp_path) as gw:
        await gw.python_client(
            KEY,
            lambda c: [
                c.track("user-1", "Order Completed", ORDER, anonymous_id="device-1"),
                c.track("user-1", "Order Refunded", ORDER, anonymous_id="device-1"),
            ],
        )
        await gw.wait_delivered("amp")
    completed = sum(e.get("revenue", 0) for e in api.events if e["event_type"] != "Order Refunded")
    refunded = sum(e.get("revenue", 0) for e in api.events if e["event_type"] == "Order Refunded")
    assert completed == 30.0
    assert refunded == -30.0  # the refund, as Order Completed counted it


async def test_an_invalid_api_key_dead_letters_the_batch_in_one_request(tmp_path: Path) -> None:
    # Amplitude refuses credentials with 400 "Invalid API key" (AMP-HTTP), not 401: nothing in
    # the batch is at fault, yet the error is not marked every_record, so the core sends the
    # batch again one request per message (a backlog of a million messages: a million requests).
    async with (
        open_loopback_server(lambda request: Answer(400, {"code": 400, "error": "Invalid API key"})) as server,
        run_gateway(
            config(server.url).replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5"), data_dir=tmp_path
        ) as gw,
    ):
        batch = [{"type": "track", "userId": "user-1", "event": "E", "messageId": f"m{i}"} for i in range(20)]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("amp")
        assert len(await gw.dead_letters("amp")) == 20
    assert len(server.requests) == 1
