"""ga4 across retries, deletions and replays: what an attempt settled is neither sent twice nor
skipped later (found by review)."""

from __future__ import annotations

from pathlib import Path

import trio

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


async def test_a_deletion_during_retries_does_not_make_ga4_count_the_taken_events_twice(tmp_path: Path) -> None:
    """What a batch's attempts settled is remembered under (first seq, last seq, size). A
    deletion request while the batch is in retries takes the deleted user's records out of it
    (the worker's _without_deleted) before the next attempt: the key changes, the memory is not
    found, and the retry sends again the events GA4 took in the first attempt (no dedup key)."""
    mp = MeasurementProtocol()
    flaky_ok = False
    retrying = trio.Event()
    flaky_seen = 0

    def collect(request: ReceivedRequest) -> Answer:
        nonlocal flaky_seen
        if request.json().get("client_id") == "flaky" and not flaky_ok:
            flaky_seen += 1
            if flaky_seen >= 2:
                retrying.set()
            return Answer(503, "Service Unavailable")
        return mp(request)

    slow = config("URL").replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5")
    async with (
        open_loopback_server(collect) as server,
        run_gateway(slow.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        batch = [
            {"type": "track", "anonymousId": "taken", "event": "Signed Up", "messageId": "m-1"},
            {"type": "track", "anonymousId": "flaky", "event": "Signed Up", "messageId": "m-2"},
            {"type": "track", "anonymousId": "victim", "userId": "victim", "event": "Signed Up", "messageId": "m-3"},
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        with trio.fail_after(30):
            await retrying.wait()
        answer = await gw.admin("POST", "/privacy/delete", json={"userId": "victim"})
        assert answer.status_code == 200, answer.text
        flaky_ok = True
        await gw.wait_delivered("ga")
    clients = [head["client_id"] for head, _ in mp.collected]
    assert sorted(set(clients)) == ["flaky", "taken", "victim"]
    assert clients.count("taken") == 1, clients  # once, not twice


async def test_a_replay_of_a_dead_lettered_batch_sends_every_event_again(tmp_path: Path) -> None:
    """A batch whose attempts ran out (max_attempts) is dead-lettered whole, but what its
    attempts settled stays remembered under (first seq, last seq, size). A replay of that range
    makes the same batch: the replay finds the memory and skips the events GA4 took in the
    first attempts, yet books them delivered: the replay does not send what it was asked to."""
    mp = MeasurementProtocol()
    flaky_ok = False
    replayed = trio.Event()

    def collect(request: ReceivedRequest) -> Answer:
        if request.json().get("client_id") == "flaky":
            if not flaky_ok:
                return Answer(503, "Service Unavailable")
            replayed.set()  # one request at a time, in batch order: taken's came first
        return mp(request)

    extra = "max_attempts = 2\nparallel_requests = 1"
    slow = config("URL", extra).replace("batch_max_wait_secs = 0.05", "batch_max_wait_secs = 0.5")
    async with (
        open_loopback_server(collect) as server,
        run_gateway(slow.replace("URL", server.url), data_dir=tmp_path) as gw,
    ):
        batch = [
            {"type": "track", "anonymousId": "taken", "event": "Signed Up", "messageId": "m-1"},
            {"type": "track", "anonymousId": "flaky", "event": "Signed Up", "messageId": "m-2"},
        ]
        assert (await gw.batch(batch, write_key=KEY)).status_code == 200
        await gw.wait_delivered("ga")
        assert len(await gw.dead_letters("ga")) == 2
        flaky_ok = True
        answer = await gw.admin("POST", "/replays", json={"destination": "ga", "since_ms": 0})
        assert answer.status_code == 200 and answer.json()["replay"] is not None, answer.text
        with trio.fail_after(30):
            await replayed.wait()
        details = (await gw.admin("GET", "/status")).json()["destinations"]["ga"]["details"]
    clients = sorted(head["client_id"] for head, _ in mp.collected)
    assert clients == ["flaky", "taken", "taken"], (clients, details)
