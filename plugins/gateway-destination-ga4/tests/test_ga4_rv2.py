"""ga4 with validate = true across retries: each flagged event counted once (found by review)."""

from __future__ import annotations

from pathlib import Path

from gateway.testing import Answer, ReceivedRequest, open_loopback_server, run_gateway

from .test_ga4 import KEY, MeasurementProtocol, config


async def test_with_validate_a_retried_batch_counts_each_flagged_event_once(tmp_path: Path) -> None:
    """validate = true: the validation server flags an event, then /mp/collect answers 503 for
    the rest of its request. The flag is counted (events_flagged) before the collect, but kept in
    the batch's memory only after it: the retry validates the event again and counts it again."""
    mp = MeasurementProtocol()
    failed = 0

    def collect(request: ReceivedRequest) -> Answer:
        nonlocal failed
        if request.path == "/mp/collect" and failed == 0:
            failed += 1
            return Answer(503, "Service Unavailable")
        return mp(request)

    async with (
        open_loopback_server(collect) as server,
        run_gateway(config(server.url, "validate = true"), data_dir=tmp_path) as gw,
    ):
        batch = [
            {"type": "track", "anonymousId": "a1", "event": "Signed Up", "messageId": "m-1"},
            {"type": "track", "anonymousId": "a1", "event": "Paid", "properties": {"value": 5}, "messageId": "m-2"},
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ga")
        letters = await gw.dead_letters("ga")
        status = (await gw.admin("GET", "/status")).json()["destinations"]["ga"]
    assert failed == 1
    assert [letter["error"].startswith("GA4 validation") for letter in letters] == [True]
    assert status["details"]["events_flagged"] == 1, status["details"]
