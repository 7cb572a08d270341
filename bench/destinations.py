"""Destination benchmark: events/s each analytics destination delivers to a loopback sink,
against the ``http`` destination delivering the same messages to the same sink, in one run.

The issue's target: every destination delivers at least 0.7x the ``http`` destination's
events/s (the mapping is not the bottleneck). Ratios, never absolute rates, are the verdict.

    .venv/bin/python bench/destinations.py                 # 20,000 messages, 3 rounds
    .venv/bin/python bench/destinations.py --messages 50000 --rounds 5

How: one gateway stores ``--messages`` realistic messages once (track with and without
Ecommerce products, identify, page, screen, group, from 500 users). Then, per round and per
destination, a gateway runs in this process (pinned to core 0), then a reload adds that
destination alone, starting from the stored messages (``start_at`` in the past), and the time
until it has delivered all of them is measured from the reload that adds it; each vendor run
comes right after an ``http`` run (back-to-back pairs keep the VM's drift out of the ratios),
and each run starts with a full garbage collection (no run collects the one before's garbage).
The sink (``bench/loopback_sink.py``, a subprocess on core 1) reads each body and answers ``200
{"status": 1}``, which every destination takes as success, and counts the requests; it answers
far more requests a second than any destination here makes, so it bounds none of them. The
gateway's CPU time per message (this process, all threads) is reported with each run: unlike
the rates, it hardly depends on what else the VM runs. Destinations
run with their type's delivery defaults (batch sizes within the vendor's limits, concurrency),
as users get them; the ``http`` destination with its own.

GA4 takes one client's events per request (at most 25), so it runs twice: on the default
messages (500 users: about 4 events a request) and on messages from 10 users (``ga4-10-users``:
about 23). Each round also measures what a bare ``HttpClient`` (the gateway's HTTP client) in this
process gets answered (``--capacity-secs`` of small POSTs at 4 and at 16 requests in flight): the
bound of a per-client protocol.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from gateway.kit.http_client import HttpClient
from gateway.testing import run_gateway

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-destinations-write-key"
VENDORS = {
    "segment": 'write_key = "cloud-key"\nendpoint = "{url}"',
    "mixpanel": 'project_token = "token"\nservice_account_username = "sa"\nservice_account_secret = "s"\n'
    'project_id = "1"\napi_host = "{url}"',
    "amplitude": 'api_key = "amp-key"\nendpoint = "{url}"',
    "ga4": 'measurement_id = "G-BENCH"\napi_secret = "secret"\nendpoint = "{url}"',
    "posthog": 'api_key = "phc_bench"\nhost = "{url}"',
}
#: What each run delivers: (destination type, how many users the stored messages come from).
RUNS = {
    "segment": ("segment", 500),
    "mixpanel": ("mixpanel", 500),
    "amplitude": ("amplitude", 500),
    "ga4": ("ga4", 500),
    "ga4-10-users": ("ga4", 10),
    "posthog": ("posthog", 500),
}
#: A GA4 request of 4 events (the default messages' average): what the capacity phase sends.
GA4_BODY = (
    b'{"client_id":"anon-1","user_id":"user-1","events":['
    + b",".join(
        [
            b'{"name":"Video_Played","params":{"engagement_time_msec":1,"title":"Intro","seconds":42},'
            b'"timestamp_micros":1765080000123000}'
        ]
        * 4
    )
    + b"]}"
)


def messages(count: int, users: int = 500) -> list[dict]:
    """A realistic mix: most track calls (a fifth of them Ecommerce with products), then identify,
    page, screen and group, from ``users`` users in turn, each with a context of its own (IP, user
    agent, page)."""
    product = {
        "product_id": "p-1",
        "sku": "S-1",
        "name": "Mug",
        "brand": "Acme",
        "category": "Kitchen",
        "price": 12.5,
        "quantity": 2,
    }
    out = []
    for i in range(count):
        n = i % users
        user = f"user-{n}"
        context = {
            "ip": f"203.0.{n // 250}.{n % 250}",
            "userAgent": f"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.{n}",
            "page": {"url": f"https://shop.example.com/p/{n}", "path": f"/p/{n}", "referrer": "https://google.com"},
            "campaign": {"name": "spring", "source": "newsletter"},
            "library": {"name": "analytics.js", "version": "2"},
        }
        base = {"userId": user, "anonymousId": f"anon-{n}", "messageId": f"bench-{i}", "context": context}
        kind = i % 20
        if kind < 10:
            out.append(
                {
                    **base,
                    "type": "track",
                    "event": "Video Played",
                    "properties": {"title": "Intro", "seconds": 42, "quality": "hd", "autoplay": False},
                }
            )
        elif kind < 12:
            out.append(
                {**base, "type": "track", "event": "Product Viewed", "properties": {**product, "currency": "USD"}}
            )
        elif kind < 13:
            out.append(
                {
                    **base,
                    "type": "track",
                    "event": "Order Completed",
                    "properties": {
                        "order_id": f"o-{i}",
                        "total": 27.5,
                        "revenue": 25,
                        "currency": "USD",
                        "products": [product, {**product, "product_id": "p-2"}],
                    },
                }
            )
        elif kind < 14:
            out.append(
                {
                    **base,
                    "type": "track",
                    "event": "Checkout Started",
                    "properties": {"order_id": f"o-{i}", "value": 25, "currency": "USD", "products": [product]},
                }
            )
        elif kind < 16:
            out.append({**base, "type": "identify", "traits": {"email": f"{user}@example.com", "plan": "pro"}})
        elif kind < 18:
            out.append({**base, "type": "page", "name": "Product", "properties": {"title": "Mug"}})
        elif kind < 19:
            out.append({**base, "type": "screen", "name": "Home"})
        else:
            out.append({**base, "type": "group", "groupId": "acme", "traits": {"name": "Acme"}})
    return out


def gateway_config(data_dir: Path, destination: str, url: str) -> str:
    options = 'url = "{url}/hook"' if destination == "http" else VENDORS[destination]
    return f"""
[server]
data_dir = "{data_dir}"

[log]
synchronous = "normal"

[sources.web]
write_key = "{KEY}"

[destinations.bench_{destination}]
type = "{destination}"
{options.format(url=url)}
start_at = "2000-01-01T00:00:00Z"
batch_max_wait_secs = 0.0       # the backlog is all there: no waiting for a last batch to fill
max_attempts = 1
"""


async def fill(data_dir: Path, count: int, users: int = 500) -> None:
    async with run_gateway(
        f'[sources.web]\nwrite_key = "{KEY}"\n[log]\nsynchronous = "normal"\n', data_dir=data_dir
    ) as gw:
        batch = messages(count, users)
        for start in range(0, count, 500):
            response = await gw.batch(batch[start : start + 500], write_key=KEY)
            assert response.status_code == 200 and "rejected" not in response.text, response.text
        # The dedup keys still in memory (up to 20,000) are written to their slice now: left
        # there, the first gateway of a measured run flushed them at startup, in a thread whose
        # CPU (8,000 instructions a message at 10,000 messages) fell into one run's window.
        await gw._gateway.log.purge([])


async def deliver(data_dir: Path, destination: str, url: str, count: int, run: int) -> float:
    """Seconds the destination takes to deliver the stored messages (a fresh cursor each run),
    from the reload that adds it to a running gateway (startup is not counted)."""
    name = f"bench_{destination}_{run}"
    config = gateway_config(data_dir, destination, url).replace(f"bench_{destination}", name)
    bare = config[: config.index(f"[destinations.{name}]")]
    async with run_gateway(bare, data_dir=data_dir) as gw:
        started = time.perf_counter()
        assert await gw.reload(config)
        await gw.wait_delivered(name, within_secs=600)
        elapsed = time.perf_counter() - started
        stats = gw.statistics(name)
        assert stats["delivered"] == count and stats["dead_lettered"] == 0, stats
    return elapsed


def _cpu_secs() -> float:
    """CPU time of this process (the gateway under test, all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sink_requests(url: str) -> int:
    """How many requests the sink has answered so far."""
    async with httpx.AsyncClient() as client:
        return int((await client.get(f"{url}/requests")).text)


async def sink_capacity(url: str, in_flight: int, seconds: float) -> float:
    """Requests/s a bare :class:`HttpClient` (the gateway's HTTP client, nothing else, in this
    process on core 0) gets answered, keeping ``in_flight`` GA4 requests open: with the sink far
    faster, the client's own cost per request, the bound of a protocol of many small requests."""
    done = 0
    client = HttpClient({"Content-Type": "application/json"})

    async def post_until(deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.request("POST", f"{url}/mp/collect", {}, GA4_BODY)
            assert response.status_code == 200
            done += 1

    try:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(post_until, started + seconds)
        return done / (time.perf_counter() - started)
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    runs = {label: RUNS[label] for label in args.only or RUNS}
    with tempfile.TemporaryDirectory(prefix="bench-destinations-") as scratch:
        data_dir = Path(scratch)
        port = 18000 + os.getpid() % 1000
        sink = subprocess.Popen(  # noqa: ASYNC220 (starts the sink and returns; nothing waits)
            [
                "taskset",
                "-c",
                "1",
                sys.executable,
                str(ROOT / "bench" / "loopback_sink.py"),
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            with trio.fail_after(30):
                while True:
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await trio.sleep(0.1)
            logs = {}
            for users in sorted({users for _, users in runs.values()}, reverse=True):
                print(f"storing {args.messages} messages from {users} users...", flush=True)
                logs[users] = data_dir / f"log-{users}"
                await fill(logs[users], args.messages, users)
            rates: dict[str, list[float]] = {}
            per_request: dict[str, list[float]] = {}
            requests_per_sec: dict[str, list[float]] = {}
            cpu_per_message: dict[str, list[float]] = {}
            ratios: dict[str, list[float]] = {}
            cpu_ratios: dict[str, list[float]] = {}
            capacity: dict[int, list[float]] = {4: [], 16: []}
            run = 0
            for round_number in range(args.rounds):
                for in_flight, values in capacity.items():
                    values.append(await sink_capacity(url, in_flight, args.capacity_secs))
                print(
                    f"round {round_number + 1}: a bare HttpClient gets "
                    + ", ".join(f"{values[-1]:.0f} req/s with {n} in flight" for n, values in capacity.items()),
                    flush=True,
                )
                for label, (vendor, users) in runs.items():
                    pair = {}
                    for destination in ("http", vendor):
                        run += 1
                        gc.collect()
                        before = await sink_requests(url)
                        cpu = _cpu_secs()
                        seconds = await deliver(logs[users], destination, url, args.messages, run)
                        cpu = _cpu_secs() - cpu
                        requests = await sink_requests(url) - before
                        pair[destination] = args.messages / seconds
                        key = label if destination == vendor else f"http ({users} users)"
                        rates.setdefault(key, []).append(pair[destination])
                        cpu_per_message.setdefault(key, []).append(cpu / args.messages * 1e6)
                        requests_per_sec.setdefault(key, []).append(requests / seconds)
                        per_request.setdefault(key, []).append(args.messages / requests)
                    ratios.setdefault(label, []).append(pair[vendor] / pair["http"])
                    # The same comparison by CPU: what the rates' ratio would be with a core to itself.
                    http_cpu = cpu_per_message[f"http ({users} users)"][-1]
                    cpu_ratios.setdefault(label, []).append(http_cpu / cpu_per_message[label][-1])
                    print(
                        f"round {round_number + 1}: http {pair['http']:8.0f} ev/s   {label:<12} "
                        f"{pair[vendor]:8.0f} ev/s   ratio {pair[vendor] / pair['http']:.2f}   "
                        f"({requests_per_sec[label][-1]:.0f} req/s; CPU/message: http "
                        f"{cpu_per_message[f'http ({users} users)'][-1]:.1f} µs, {label} "
                        f"{cpu_per_message[label][-1]:.1f} µs: {cpu_ratios[label][-1]:.2f})",
                        flush=True,
                    )
        finally:
            sink.terminate()
            sink.wait(10)
    median = statistics.median
    print(
        f"\n{args.messages} messages, {args.rounds} rounds; medians (events/s delivered, ratio to http in the same "
        "pair, requests/s the sink got, messages per request, the gateway process's CPU per message, http's CPU per "
        "message over the destination's in the same pair)"
    )
    print(
        f"{'destination':<18}{'events/s':>10}{'ratio':>8}{'req/s':>8}{'msg/req':>9}{'CPU µs':>8}{'CPU ratio':>10}"
        "  target >= 0.7x http"
    )
    for key in [key for key in rates if key.startswith("http")]:
        print(
            f"{key:<18}{median(rates[key]):>10.0f}{'':>8}{median(requests_per_sec[key]):>8.0f}"
            f"{median(per_request[key]):>9.1f}{median(cpu_per_message[key]):>8.1f}"
        )
    for label, values in ratios.items():
        ratio = median(values)
        verdict = "MET" if ratio >= 0.7 else "MISSED"
        print(
            f"{label:<18}{median(rates[label]):>10.0f}{ratio:>8.2f}{median(requests_per_sec[label]):>8.0f}"
            f"{median(per_request[label]):>9.1f}{median(cpu_per_message[label]):>8.1f}"
            f"{median(cpu_ratios[label]):>10.2f}  {verdict}   (runs: {', '.join(f'{r:.2f}' for r in values)}; CPU: "
            f"{', '.join(f'{r:.2f}' for r in cpu_ratios[label])})"
        )
    best = max(median(values) for values in capacity.values())
    print(
        "\nrequests/s of a bare HttpClient on core 0 (small POSTs to the sink): "
        + ", ".join(f"{median(values):.0f} req/s with {n} in flight" for n, values in capacity.items())
    )
    for label, (vendor, users) in runs.items():
        if vendor == "ga4":
            bound = best * median(per_request[label])
            print(
                f"{label}: at most {best:.0f} req/s x {median(per_request[label]):.1f} messages a request = "
                f"{bound:.0f} messages/s = {bound / median(rates[f'http ({users} users)']):.2f}x http"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="only these runs")
    parser.add_argument("--capacity-secs", type=float, default=3.0, help="length of each sink capacity measurement")
    os.sched_setaffinity(0, {0})
    trio.run(main, parser.parse_args())
