"""Adversarial checks of the ga4 destination (issue 16 review), end to end: Segment's Python
client -> gateway -> destination -> the loopback Measurement Protocol of test_ga4."""

from __future__ import annotations

from pathlib import Path

from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

from .test_ga4 import KEY, MeasurementProtocol, config


async def test_a_product_viewed_without_currency_is_not_given_a_value_ga4_refuses(tmp_path: Path) -> None:
    # Segment's Product Viewed and Product Added often carry a price and no currency. GA4
    # requires currency whenever value is set (GA-EVENTS; the validation server flags it), and
    # Segment's mapping takes value from properties.value only (AD-GA4). The destination makes
    # up value = price x quantity, so with validate = true an ordinary product view is
    # dead-lettered, and without it GA4 gets an event it flags as invalid.
    mp = MeasurementProtocol()
    async with (
        open_loopback_server(mp) as server,
        run_gateway(config(server.url, "validate = true"), data_dir=tmp_path) as gw,
    ):
        await gw.python_client(
            KEY,
            lambda c: [
                c.track(
                    anonymous_id="a1",
                    event="Product Viewed",
                    properties={"product_id": "p1", "name": "Mug", "price": 10},
                ),
                c.track(
                    anonymous_id="a1",
                    event="Product Added",
                    properties={"product_id": "p1", "name": "Mug", "price": 10, "quantity": 2, "cart_id": "c1"},
                ),
            ],
        )
        await gw.wait_delivered("ga")
        letters = await gw.dead_letters("ga")
    assert [letter["error"] for letter in letters] == []
    assert [event["name"] for _, event in mp.collected] == ["view_item", "add_to_cart"]


async def test_a_request_refused_for_good_does_not_make_ga4_count_its_batch_mates_twice(tmp_path: Path) -> None:
    # A batch is sent as one request per client. When one of them is refused for good (a 400:
    # "correct any errors in your HTTP request. Don't retry the same request"), the whole batch
    # fails permanently and the core resends it record by record, so the other clients' events,
    # which GA4 took in the first attempt, arrive again: GA4 has no dedup key and counts them twice.
    mp = MeasurementProtocol()

    def collect(request: ReceivedRequest) -> Answer:
        if request.json().get("client_id") == "refused":
            return Answer(400, "Bad Request")
        return mp(request)

    slow = config("URL").replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5")
    async with (
        open_loopback_server(collect) as server,
        run_gateway(slow.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        batch = [
            {"type": "track", "anonymousId": "taken", "event": "Signed Up", "messageId": "m-1"},
            {"type": "track", "anonymousId": "refused", "event": "Signed Up", "messageId": "m-2"},
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ga")
        letters = await gw.dead_letters("ga")
    assert len(letters) == 1
    assert [head["client_id"] for head, _ in mp.collected] == ["taken"]  # once, not twice


async def test_promotion_and_sign_up_events_keep_what_they_say(tmp_path: Path) -> None:
    # Promotion Viewed/Clicked become view_promotion/select_promotion and Signed Up becomes
    # sign_up (Segment's GA4 mapping, destinations.md 6.3), but an Ecommerce event keeps only
    # the params _ecommerce_params knows (items, value, currency...): the promotion's id, name,
    # creative and slot, and the sign-up's method, are all dropped, leaving GA4 an empty event.
    mp = MeasurementProtocol()
    async with open_loopback_server(mp) as server, run_gateway(config(server.url), data_dir=tmp_path) as gw:
        await gw.python_client(
            KEY,
            lambda c: [
                c.track(
                    anonymous_id="a1",
                    event="Promotion Viewed",
                    properties={"promotion_id": "promo_1", "name": "Summer", "creative": "banner", "position": "top"},
                ),
                c.track(anonymous_id="a1", event="Signed Up", properties={"method": "google"}),
            ],
        )
        await gw.wait_delivered("ga")
    by_name = {event["name"]: event["params"] for _, event in mp.collected}
    assert by_name["view_promotion"].get("promotion_id") == "promo_1", by_name["view_promotion"]
    assert by_name["sign_up"].get("method") == "google", by_name["sign_up"]
