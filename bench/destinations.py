"""Destination benchmark: events/s each analytics destination delivers to a loopback sink,
against the ``http`` destination delivering the same messages to the same sink, in one run.

The issue's target: every destination delivers at least 0.7x the ``http`` destination's
events/s (the mapping is not the bottleneck). Ratios, never absolute rates, are the verdict.

    .venv/bin/python bench/destinations.py                 # 20,000 messages, 3 rounds
    .venv/bin/python bench/destinations.py --messages 50000 --rounds 5

How: one gateway stores ``--messages`` realistic messages once (track with and without
Ecommerce products, identify, page, screen, group). Then, per round and per destination, a
gateway runs in this process (pinned to core 0), then a reload adds that destination alone, starting from the
stored messages (``start_at`` in the past), and the time until it has delivered all of them is
measured from the reload that adds it; each vendor run comes right after an ``http`` run (back-to-back pairs keep the VM's
drift out of the ratios). The sink is a bare ASGI app in a subprocess on core 1: it reads each
body and answers ``200 {"status": 1}``, which every destination takes as success. Destinations
run with their type's delivery defaults (batch sizes within the vendor's limits, concurrency),
as users get them; the ``http`` destination with its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

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
SINK = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"status":1,"success":true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def messages(count: int) -> list[dict]:
    """A realistic mix: most track calls (a fifth of them Ecommerce with products), then identify,
    page, screen and group, from 500 users."""
    context = {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
               "page": {"url": "https://shop.example.com/p/1", "path": "/p/1", "referrer": "https://google.com"},
               "campaign": {"name": "spring", "source": "newsletter"}, "library": {"name": "analytics.js", "version": "2"}}
    product = {"product_id": "p-1", "sku": "S-1", "name": "Mug", "brand": "Acme", "category": "Kitchen",
               "price": 12.5, "quantity": 2}
    out = []
    for i in range(count):
        user = f"user-{i % 500}"
        base = {"userId": user, "anonymousId": f"anon-{i % 500}", "messageId": f"bench-{i}", "context": context}
        kind = i % 20
        if kind < 10:
            out.append({**base, "type": "track", "event": "Video Played",
                        "properties": {"title": "Intro", "seconds": 42, "quality": "hd", "autoplay": False}})
        elif kind < 12:
            out.append({**base, "type": "track", "event": "Product Viewed", "properties": {**product, "currency": "USD"}})
        elif kind < 13:
            out.append({**base, "type": "track", "event": "Order Completed",
                        "properties": {"order_id": f"o-{i}", "total": 27.5, "revenue": 25, "currency": "USD",
                                       "products": [product, {**product, "product_id": "p-2"}]}})
        elif kind < 14:
            out.append({**base, "type": "track", "event": "Checkout Started",
                        "properties": {"order_id": f"o-{i}", "value": 25, "currency": "USD", "products": [product]}})
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


async def fill(data_dir: Path, count: int) -> None:
    async with run_gateway(f'[sources.web]\nwrite_key = "{KEY}"\n[log]\nsynchronous = "normal"\n', data_dir=data_dir) as gw:
        batch = messages(count)
        for start in range(0, count, 500):
            response = await gw.batch(batch[start : start + 500], write_key=KEY)
            assert response.status_code == 200 and "rejected" not in response.text, response.text


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


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-destinations-") as scratch:
        data_dir = Path(scratch)
        sink_file = data_dir / "sink_app.py"
        sink_file.write_text(SINK)
        port = 18000 + os.getpid() % 1000
        sink = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind",
             f"127.0.0.1:{port}", "--access-logfile", "-", "sink_app:app"],
            cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
            print(f"storing {args.messages} messages...", flush=True)
            await fill(data_dir / "log", args.messages)
            rates: dict[str, list[float]] = {}
            ratios: dict[str, list[float]] = {}
            run = 0
            for round_number in range(args.rounds):
                for vendor in args.only or list(VENDORS):
                    pair = {}
                    for destination in ("http", vendor):
                        run += 1
                        seconds = await deliver(data_dir / "log", destination, url, args.messages, run)
                        pair[destination] = args.messages / seconds
                        rates.setdefault(destination, []).append(pair[destination])
                    ratios.setdefault(vendor, []).append(pair[vendor] / pair["http"])
                    print(f"round {round_number + 1}: http {pair['http']:8.0f} ev/s   {vendor:<10} "
                          f"{pair[vendor]:8.0f} ev/s   ratio {pair[vendor] / pair['http']:.2f}", flush=True)
        finally:
            sink.terminate()
            sink.wait(10)
    print(f"\n{args.messages} messages, {args.rounds} rounds; medians (events/s delivered, ratio to http in the same pair)")
    print(f"{'destination':<12}{'events/s':>10}{'ratio':>8}  target >= 0.7x http")
    print(f"{'http':<12}{statistics.median(rates['http']):>10.0f}{'':>8}")
    for vendor, values in ratios.items():
        ratio = statistics.median(values)
        verdict = "MET" if ratio >= 0.7 else "MISSED"
        print(f"{vendor:<12}{statistics.median(rates[vendor]):>10.0f}{ratio:>8.2f}  {verdict}"
              f"   (runs: {', '.join(f'{r:.2f}' for r in values)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(VENDORS), help="only these destinations")
    os.sched_setaffinity(0, {0})
    trio.run(main, parser.parse_args())
