"""Fault tests on the real daemon: SIGKILL mid-traffic, dedup across restarts, SIGTERM drain.

The contract under test: a 2xx means the message is durable, so it reaches every destination at
least once whatever happens to the process afterwards; re-sends after a crash are bounded by
what was in flight (``concurrency`` batches); a (source, messageId) is stored once.

The kill schedule is random but seeded; the seed is printed (run with ``-s``) and named in every
failure message. Re-run a failure with ``GATEWAY_FAULT_SEED=<seed>``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gatewayproc import (
    WRITE_KEY,
    GatewayProcess,
    audit_log,
    config_text,
    log_dead_letters,
    read_jsonl,
    wait_booked,
)
from tests.sink import Sink, free_port, http_destination

GRACEFUL_SECS = 5.0  # graceful_shutdown_secs in tests.gatewayproc.config_text


def _seed() -> int:
    return int(os.environ.get("GATEWAY_FAULT_SEED") or random.SystemRandom().randrange(2**32))


def _message(index: int, message_id: str) -> dict[str, Any]:
    return {
        "userId": f"user-{index % 37}",
        "event": f"Event {index}",
        "messageId": message_id,
        "properties": {"index": index},
    }


@dataclass
class _Request:
    path: str
    json: dict[str, Any]
    ids: list[str]


def _plan(rng: random.Random, total: int, prefix: str) -> list[_Request]:
    """``total`` messages as a random mix of /v1/track calls and /v1/batch calls of 10."""
    requests = []
    index = 0
    while index < total:
        if rng.random() < 0.5:
            mid = f"{prefix}-{index}"
            requests.append(_Request("/v1/track", _message(index, mid), [mid]))
            index += 1
        else:
            items = []
            for _ in range(min(10, total - index)):
                items.append({"type": "track", **_message(index, f"{prefix}-{index}")})
                index += 1
            requests.append(_Request("/v1/batch", {"batch": items}, [m["messageId"] for m in items]))
    return requests


def _up() -> threading.Event:
    up = threading.Event()
    up.set()
    return up


#: How many times in a row a request may fail at the transport level while the gateway is up
#: (the first one on a connection the killed gateway left behind fails once).
TRANSPORT_RETRIES_WHILE_UP = 20


@dataclass
class _Client:
    """Sends a plan in order from a thread. A request that fails at the transport level (the
    gateway is down) is not acknowledged, and is sent again once the gateway is ``up`` again.
    ``lock`` is notified at each acknowledgement and at the end (clients may share one)."""

    url: str
    requests: list[_Request]
    acked: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    errors: list[BaseException] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Condition = field(default_factory=threading.Condition)
    #: Cleared by the test before it kills the gateway, set once it started again.
    up: threading.Event = field(default_factory=_up)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _acknowledged(self, ids: list[str]) -> None:
        with self.lock:
            self.acked.update(ids)
            self.lock.notify_all()

    def _finished(self) -> None:
        with self.lock:
            self.done.set()
            self.lock.notify_all()

    def run(self) -> None:
        try:
            with httpx.Client(auth=(WRITE_KEY, ""), timeout=15) as client:
                for request in self.requests:
                    failures_while_up = 0
                    while True:
                        with self.lock:
                            self.attempted.update(request.ids)
                        try:
                            response = client.post(self.url + request.path, json=request.json)
                        except httpx.TransportError:
                            self.transport_errors += 1
                            if self.up.is_set():
                                failures_while_up += 1
                                if failures_while_up > TRANSPORT_RETRIES_WHILE_UP:
                                    raise
                            elif not self.up.wait(60):
                                raise AssertionError("the gateway was not started again within 60 s") from None
                            continue
                        self.statuses[response.status_code] += 1
                        if response.status_code != 200:
                            raise AssertionError(f"{request.path} answered {response.status_code}: {response.text}")
                        self._acknowledged(request.ids)
                        break
        except BaseException as error:
            self.errors.append(error)
        finally:
            self._finished()


def _wait_acked(clients: list[_Client], count: float, *, seed: int, within_secs: float = 60.0) -> None:
    """Return once the clients (sharing one ``lock``) have ``count`` acknowledged messages in
    all, or all of them finished."""
    lock = clients[0].lock
    assert all(c.lock is lock for c in clients)

    def enough() -> bool:
        return sum(len(c.acked) for c in clients) >= count or all(c.done.is_set() for c in clients)

    with lock:
        if not lock.wait_for(enough, timeout=within_secs):
            acked = sum(len(c.acked) for c in clients)
            raise AssertionError(f"seed={seed}: {acked} of {count:.0f} messages acknowledged within {within_secs}s")


def _check_delivered_bodies(sink: Sink, requests: list[_Request], seed: int) -> None:
    """What the sink got is what was sent: no unknown ids, no mixed-up bodies."""
    sent: dict[str, dict[str, Any]] = {}
    for request in requests:
        for message in request.json["batch"] if request.path == "/v1/batch" else [request.json]:
            sent[message["messageId"]] = message
    unknown = sink.delivered_ids() - set(sent)
    assert not unknown, f"seed={seed}: delivered ids that were never sent: {sorted(unknown)[:10]}"
    for mid, message in sink.messages.items():
        original = sent[mid]
        assert message["type"] == "track" and message["event"] == original["event"], (seed, mid, message)
        assert message["properties"] == original["properties"] and message["userId"] == original["userId"], (seed, mid)
        assert "receivedAt" in message, (seed, mid)


# -- 1. SIGKILL at random moments ------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_every_acknowledged_message_is_delivered_across_sigkills(tmp_path: Path, concurrency: int) -> None:
    seed = _seed()
    rng = random.Random(seed)
    print(f"\n[crash safety] seed={seed} concurrency={concurrency} (GATEWAY_FAULT_SEED={seed} to replay)")
    total, batch_max, kills = 1500, 20, 3
    requests = _plan(rng, total, f"kill{concurrency}")
    # One fraction of the acknowledged messages per kill, spread over the run.
    kill_at = [rng.uniform(lo, hi) for lo, hi in ((0.1, 0.3), (0.4, 0.6), (0.7, 0.85))][:kills]
    print(f"[crash safety] kills after {[round(f * total) for f in kill_at]} acknowledged messages")

    with Sink(delay=rng.uniform(0.02, 0.05)) as sink:
        port = free_port()
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(
            config_text(
                tmp_path,
                archive=False,
                listen=f"127.0.0.1:{port}",
                extra=http_destination(
                    sink.url,
                    batch_max_messages=batch_max,
                    batch_max_wait_secs=0.05,
                    concurrency=concurrency,
                    retry_initial_secs=0.1,
                    retry_max_secs=0.5,
                ),
            )
        )
        gateway = GatewayProcess(config_path)
        client = _Client(f"http://127.0.0.1:{port}", requests)
        thread = threading.Thread(target=client.run, daemon=True)
        try:
            gateway.start()
            thread.start()
            for number, fraction in enumerate(kill_at, 1):
                _wait_acked([client], fraction * total, seed=seed)
                if number == 2 or rng.random() < 0.5:
                    # Right after the sink refused a batch, while the gateway waits to retry it:
                    # a cursor that moved before the destination took the batch would lose it.
                    moment = "after a refused send"
                    assert sink.refuse_next().wait(10), f"seed={seed}: no delivery to refuse"
                else:
                    # A moment chosen by the seed: after a few more acknowledged messages.
                    later = rng.randint(0, 30)
                    moment = f"{later} messages later"
                    _wait_acked([client], client.acked_count() + later, seed=seed)
                assert gateway.proc is not None and gateway.proc.poll() is None, (
                    f"seed={seed}: the gateway died on its own before kill {number}:\n" + "".join(gateway.lines[-30:])
                )
                client.up.clear()
                gateway.kill()
                acked, delivered = client.acked_count(), len(sink.delivered_ids())
                print(
                    f"[crash safety] kill {number} {moment}: acked={acked} delivered={delivered} "
                    f"sink_requests={sink.requests}"
                )
                assert acked < total, f"seed={seed}: kill {number} came after the client had finished"
                gateway.start()
                client.up.set()
            thread.join(90)
            assert not thread.is_alive(), f"seed={seed}: the client did not finish"
            assert not client.errors, f"seed={seed}: client failed: {client.errors[0]!r}"
            assert client.acked == client.attempted == {mid for r in requests for mid in r.ids}

            try:
                sink.wait_delivered(client.acked, within_secs=40)
            except AssertionError:
                missing = client.acked - sink.delivered_ids()
                raise AssertionError(
                    f"seed={seed}: {len(missing)} acknowledged messages never delivered, e.g. {sorted(missing)[:10]}"
                ) from None
            _check_delivered_bodies(sink, requests, seed)
            assert gateway.stop() == 0
        finally:
            gateway.kill()
        duplicates = sink.duplicates()
        bound = kills * concurrency * batch_max
        print(
            f"[crash safety] seed={seed}: {total} acked, {len(sink.delivered_ids())} delivered, "
            f"{duplicates} duplicate deliveries (bound {bound}), transport errors={client.transport_errors}, "
            f"statuses={dict(client.statuses)}, sink requests={sink.requests}"
        )
        # A crash re-sends at most the batches that were in flight and not yet recorded.
        assert duplicates <= bound, f"seed={seed}: {duplicates} duplicate deliveries, more than {bound}"
        assert set(client.statuses) == {200}, f"seed={seed}: unexpected statuses {client.statuses}"
        assert sink.bad_requests == 0
        assert log_dead_letters(tmp_path) == []
        # The books survive the kills too: every accepted message is delivered exactly once in
        # them (re-sends after a crash are not double-counted), nothing pending, nothing lost.
        books = audit_log(tmp_path)
        [hook] = (
            books.destinations
            if len(books.destinations) == 1
            else [d for d in books.destinations if d.destination != "archive"]
        )
        assert books.balanced, f"seed={seed}: {hook}"
        assert hook.pending == 0 and hook.delivered == hook.expected == len(sink.delivered_ids())


# -- 2. Dedup ------------------------------------------------------------------------------------------


def test_same_message_id_is_delivered_once_even_across_a_restart(tmp_path: Path) -> None:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(config_text(tmp_path, admin=True))
    archive = tmp_path / "archive"
    gateway = GatewayProcess(config_path)

    def delivered_ids() -> list[str]:
        wait_booked(gateway, "archive")
        return [m["messageId"] for m in read_jsonl(archive)]

    def post(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
        response = client.post(gateway.url + path, json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}

    try:
        gateway.start()
        with httpx.Client(auth=(WRITE_KEY, "")) as client:
            post(client, "/v1/track", {"userId": "u1", "event": "First", "messageId": "dup-1", "properties": {"v": 1}})
            post(
                client,
                "/v1/batch",
                {
                    "batch": [
                        {
                            "type": "track",
                            "userId": "u1",
                            "event": "First",
                            "messageId": "dup-1",
                            "properties": {"v": 2},
                        },
                        {"type": "identify", "userId": "u2", "messageId": "dup-2", "traits": {"v": 1}},
                        {
                            "type": "track",
                            "userId": "u3",
                            "event": "Twice",
                            "messageId": "dup-3",
                            "properties": {"v": 1},
                        },
                        {
                            "type": "track",
                            "userId": "u3",
                            "event": "Twice",
                            "messageId": "dup-3",
                            "properties": {"v": 2},
                        },
                    ]
                },
            )
            post(client, "/v1/track", {"userId": "u1", "event": "Marker", "messageId": "marker-1"})
        # One worker reads the log in order: a second copy of dup-1 would come before the marker.
        assert delivered_ids() == ["dup-1", "dup-2", "dup-3", "marker-1"]
        assert gateway.stop() == 0

        gateway.start()
        with httpx.Client(auth=(WRITE_KEY, "")) as client:
            post(client, "/v1/track", {"userId": "u1", "event": "First", "messageId": "dup-1", "properties": {"v": 3}})
            post(
                client,
                "/v1/batch",
                {
                    "batch": [
                        {"type": "identify", "userId": "u2", "messageId": "dup-2", "traits": {"v": 2}},
                        {"type": "track", "userId": "u1", "event": "Marker", "messageId": "marker-2"},
                    ]
                },
            )
        assert delivered_ids() == ["dup-1", "dup-2", "dup-3", "marker-1", "marker-2"]
        assert gateway.stop() == 0
    finally:
        gateway.kill()
    delivered = {m["messageId"]: m for m in read_jsonl(archive)}
    # The first copy is the one kept.
    assert delivered["dup-1"]["properties"] == {"v": 1}
    assert delivered["dup-2"]["traits"] == {"v": 1}
    assert delivered["dup-3"]["properties"] == {"v": 1}


# -- 3. SIGTERM drain ------------------------------------------------------------------------------


def test_sigterm_while_clients_send_exits_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    print(f"\n[sigterm] seed={seed}")
    with Sink(delay=0.03) as sink:
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(
            config_text(
                tmp_path,
                archive=False,
                extra=http_destination(
                    sink.url,
                    batch_max_messages=20,
                    batch_max_wait_secs=0.05,
                    retry_initial_secs=0.1,
                    retry_max_secs=0.5,
                ),
            )
        )
        gateway = GatewayProcess(config_path)
        try:
            gateway.start()
            # Three clients that send until the gateway goes away; each would send up to 3000.
            progress = threading.Condition()
            clients = [_Client(gateway.url, _plan(rng, 3000, f"term{n}"), lock=progress) for n in range(3)]
            threads = [threading.Thread(target=_send_until_refused, args=(c,), daemon=True) for c in clients]
            for thread in threads:
                thread.start()
            stop_after = rng.randint(300, 900)
            _wait_acked(clients, stop_after, seed=seed)
            acked_before = sum(c.acked_count() for c in clients)
            delivered_before = len(sink.delivered_ids())
            assert gateway.proc is not None
            started = time.monotonic()
            gateway.proc.send_signal(15)
            code = gateway.proc.wait(GRACEFUL_SECS + 10)
            elapsed = time.monotonic() - started
            for thread in threads:
                thread.join(20)
            acked = set().union(*(c.acked for c in clients))
            attempted = set().union(*(c.attempted for c in clients))
            print(
                f"[sigterm] seed={seed}: SIGTERM at acked={acked_before} delivered={delivered_before}; "
                f"exit code {code} after {elapsed:.2f}s; acked in the end {len(acked)}, "
                f"delivered before restart {len(sink.delivered_ids())}"
            )
            assert code == 0, "".join(gateway.lines[-30:])
            # Requests in flight get graceful_shutdown_secs; the rest of the teardown is quick.
            assert elapsed < GRACEFUL_SECS + 2, f"seed={seed}: took {elapsed:.2f}s to exit after SIGTERM"
            assert not any(c.errors for c in clients), [c.errors for c in clients]
            assert all(set(c.statuses) <= {200, 503} for c in clients), [c.statuses for c in clients]
            problems = [line for line in gateway.lines if "request_failed" in line or "Traceback" in line]
            assert not problems, f"seed={seed}: " + "".join(problems[:5])

            gateway.start()
            try:
                sink.wait_delivered(acked, within_secs=30)
            except AssertionError:
                missing = acked - sink.delivered_ids()
                raise AssertionError(
                    f"seed={seed}: {len(missing)} acked messages lost, e.g. {sorted(missing)[:10]}"
                ) from None
            assert sink.delivered_ids() <= attempted
            assert gateway.stop() == 0
        finally:
            gateway.kill()
        # The stop cancels the batch in flight (concurrency 1, 20 messages): at most that is re-sent.
        print(f"[sigterm] seed={seed}: {sink.duplicates()} duplicate deliveries after the restart")
        assert sink.duplicates() <= 20, f"seed={seed}: {sink.duplicates()} duplicates after a clean SIGTERM"


def _send_until_refused(client: _Client) -> None:
    """Send the plan until the gateway stops answering; nothing is re-sent after that."""
    try:
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=15) as http:
            for request in client.requests:
                with client.lock:
                    client.attempted.update(request.ids)
                try:
                    response = http.post(client.url + request.path, json=request.json)
                except httpx.TransportError:
                    client.transport_errors += 1
                    return
                client.statuses[response.status_code] += 1
                if response.status_code != 200:
                    return
                client._acknowledged(request.ids)
    except BaseException as error:
        client.errors.append(error)
    finally:
        client._finished()


def test_sigterm_with_an_idle_keep_alive_connection_exits_promptly(tmp_path: Path) -> None:
    """Segment clients keep their connection open between flushes; an idle connection has no
    request in flight, so it must not hold the shutdown for graceful_shutdown_secs."""
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(config_text(tmp_path, admin=True))
    gateway = GatewayProcess(config_path)
    try:
        gateway.start()
        with httpx.Client(auth=(WRITE_KEY, "")) as client:  # stays open (idle) during the stop
            response = client.post(
                gateway.url + "/v1/track", json={"userId": "u1", "event": "Kept Alive", "messageId": "idle-1"}
            )
            assert response.status_code == 200
            wait_booked(gateway, "archive")  # nothing left to deliver: the stop is only the stop
            started = time.monotonic()
            code = gateway.stop()
            elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < GRACEFUL_SECS / 2, (
            f"SIGTERM took {elapsed:.2f}s with one idle keep-alive connection open "
            f"(graceful_shutdown_secs={GRACEFUL_SECS})"
        )
    finally:
        gateway.kill()


# -- 4. Re-sends after a crash stay bounded when one batch is stuck in retry ----------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_batch_stuck_in_retry_does_not_widen_the_resend_window(tmp_path: Path, concurrency: int) -> None:
    """While one batch is being retried, later batches must not pile up delivered-but-unrecorded:
    a crash then re-sends at most the ``concurrency`` batches that were in flight."""
    total, batch_max = 600, 20
    with Sink(delay=0.02) as sink:
        sink.poisoned = {"stuck-40"}  # the batch holding it answers 503 until the sink recovers
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(
            config_text(
                tmp_path,
                archive=False,
                extra=http_destination(
                    sink.url,
                    batch_max_messages=batch_max,
                    batch_max_wait_secs=0.05,
                    concurrency=concurrency,
                    retry_initial_secs=0.1,
                    retry_max_secs=0.5,
                ),
            )
        )
        gateway = GatewayProcess(config_path)
        try:
            gateway.start()
            with httpx.Client(auth=(WRITE_KEY, "")) as client:
                for start in range(0, total, 50):
                    batch = [{"type": "track", **_message(i, f"stuck-{i}")} for i in range(start, start + 50)]
                    assert client.post(gateway.url + "/v1/batch", json={"batch": batch}).status_code == 200
            sink.wait_refused(4, within_secs=20)  # ~0.7 s of retries
            delivered_at_kill = len(sink.delivered_ids())
            gateway.kill()
            sink.poisoned = set()
            gateway.start()
            sink.wait_until(lambda: len(sink.delivered_ids()) == total, f"all {total} delivered")
            assert gateway.stop() == 0
        finally:
            gateway.kill()
    duplicates = sink.duplicates()
    bound = concurrency * batch_max
    print(
        f"\n[stuck batch] concurrency={concurrency}: {delivered_at_kill} delivered while one batch was "
        f"retried, {duplicates} duplicate deliveries after the kill (bound {bound})"
    )
    assert duplicates <= bound, (
        f"{duplicates} messages re-sent after one crash (more than concurrency x batch_max_messages = {bound}): "
        "batches finished behind a retried one were not recorded"
    )
