"""A dead destination's backlog stays on disk, not in memory, and drains once it recovers.

The http destination's sink answers 503 while clients send 30,000 messages (~450 bytes each, in
batches of 100). The gateway's RSS is sampled after a warm-up and then until the end: it must
stay flat while the log on disk grows by more than 10 MB. Then the sink recovers and every
message arrives.

Most of the RSS growth that remains at this size is SQLite's page cache (``cache_size`` is
set per connection in gateway/log/sqlite/_engine.py), which fills as the log is written and then
stops growing; a gateway holding the backlog itself in memory would grow well past the bound.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from gateway.log.sqlite import DB_NAME
from tests.gatewayproc import WRITE_KEY, GatewayProcess, config_text
from tests.sink import Sink, http_destination

MB = 1024 * 1024
TOTAL = 30_000
PER_REQUEST = 100
WARM_UP_REQUESTS = 40  # 4,000 messages before the first RSS sample
PADDING = "x" * 200


def _batch(number: int) -> dict[str, Any]:
    return {
        "batch": [
            {
                "type": "track",
                "messageId": f"backlog-{number}-{i}",
                "userId": f"user-{(number * PER_REQUEST + i) % 997}",
                "event": "Backlog Event",
                "properties": {"request": number, "item": i, "padding": PADDING},
                "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            }
            for i in range(PER_REQUEST)
        ]
    }


def _disk_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / DB_NAME, data_dir / f"{DB_NAME}-wal") if p.exists())


def test_dead_destination_backlog_stays_on_disk_and_drains(tmp_path: Path) -> None:
    statuses: Counter[int] = Counter()
    local = threading.local()
    clients: list[httpx.Client] = []

    with Sink(failing=True) as sink:
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(
            config_text(
                tmp_path,
                archive=False,
                extra=http_destination(sink.url, retry_initial_secs=0.1, retry_max_secs=0.5),
            )
        )
        gateway = GatewayProcess(config_path)

        def send(number: int) -> None:
            if not hasattr(local, "client"):
                local.client = httpx.Client(auth=(WRITE_KEY, ""), timeout=30)
                clients.append(local.client)
            response = local.client.post(gateway.url + "/v1/batch", json=_batch(number))
            statuses[response.status_code] += 1
            assert response.status_code == 200, response.text

        try:
            gateway.start()
            started = time.monotonic()
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(send, range(WARM_UP_REQUESTS)))
                sink.wait_refused(2)
                rss_warm, disk_warm = gateway.rss_bytes(), _disk_bytes(tmp_path)

                samples = [rss_warm]
                sampling = threading.Event()

                def sample() -> None:
                    while not sampling.wait(0.2):
                        samples.append(gateway.rss_bytes())

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                list(pool.map(send, range(WARM_UP_REQUESTS, TOTAL // PER_REQUEST)))
                sampling.set()
                sampler.join(5)
            rss_end, disk_end = gateway.rss_bytes(), _disk_bytes(tmp_path)
            ingest_secs = time.monotonic() - started
            assert not sink.delivered_ids(), "the sink was down, yet messages arrived"
            refused = sink.refused_requests

            print(
                f"\n[backlog] {TOTAL} messages in {ingest_secs:.1f}s with the sink down ({refused} refused sends); "
                f"RSS warm {rss_warm / MB:.1f} MB, end {rss_end / MB:.1f} MB, peak {max(samples) / MB:.1f} MB; "
                f"log on disk {disk_warm / MB:.1f} MB -> {disk_end / MB:.1f} MB"
            )
            assert disk_end - disk_warm > 10 * MB, "the backlog did not grow the log on disk as expected"
            assert rss_end - rss_warm < 30 * MB, f"RSS grew {(rss_end - rss_warm) / MB:.1f} MB with the backlog"
            peak = max(samples) - rss_warm
            assert peak < 30 * MB, f"RSS peaked {peak / MB:.1f} MB above warm-up"

            sink.failing = False
            recovered = time.monotonic()
            expected = {f"backlog-{n}-{i}" for n in range(TOTAL // PER_REQUEST) for i in range(PER_REQUEST)}
            sink.wait_until(lambda: len(sink.delivered_ids()) >= TOTAL, f"all {TOTAL} delivered", within_secs=40)
            print(
                f"[backlog] drained in {time.monotonic() - recovered:.1f}s "
                f"({sink.requests} requests), RSS after drain {gateway.rss_bytes() / MB:.1f} MB"
            )
            assert sink.delivered_ids() == expected
            assert sink.duplicates() == 0
            assert gateway.stop() == 0
        finally:
            for client in clients:
                client.close()
            gateway.kill()
    assert set(statuses) == {200}
