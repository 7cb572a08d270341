"""In-process ingest benchmarks: IngestHub.ingest on a real SQLite log, one hub per mode, the
modes measured in turn over several rounds (best round kept). Shared by privacy.py and
filter_chain.py so both compare their modes the same way."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
from _http_modes import add_http_arguments, http_rates

from gateway.components import Source
from gateway.config import GatewayConfig, parse_config
from gateway.ingest.hub import IngestHub
from gateway.log import open_log
from gateway.metrics import Metrics
from gateway.plugins import Registry
from gateway.privacy.classifier import Classifier
from gateway.runtime.gateway import build_filters

WRITE_KEY = "bench-write-key"
#: The envelope of the benchmarks' event: a browser's Order Completed track call; each benchmark
#: adds the traits and properties it needs.
ORDER_COMPLETED: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u_8842",
    "anonymousId": "2f4c8f0e-8b0a-4f6e-9c51-3c3e2f9d1a77",
    "messageId": "set per copy",
    "timestamp": "2026-05-09T07:35:25.123Z",
    "context": {
        "library": {"name": "analytics.js", "version": "next-1.84.1"},
        "page": {"path": "/checkout/complete", "url": "https://shop.example.com/checkout/complete?step=3"},
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
        "locale": "en-US",
        "ip": "203.0.113.42",
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="events per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode; the best is shown (default 5)")
    parser.add_argument("--batch", type=int, default=100, help="messages per ingest call (default 100)")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent callers (default 8)")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full", help="the log's synchronous")
    add_http_arguments(parser)


def copies(event: dict[str, Any], count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` fresh copies of ``event``, each with its own messageId (dedup skips nothing)."""
    template = msgspec.json.encode(event)
    events = []
    for i in range(count):
        copy = msgspec.json.decode(template)
        copy["messageId"] = f"{prefix}-{i}"
        events.append(copy)
    return events


async def ingest_round(hub: IngestHub, source: Source, events: list[dict[str, Any]], batch: int, tasks: int) -> float:
    """Seconds to ingest ``events`` in batches of ``batch`` from ``tasks`` concurrent callers."""
    batches = [[(source, e) for e in events[i : i + batch]] for i in range(0, len(events), batch)]
    next_batch = iter(batches)

    async def caller() -> None:
        for messages in next_batch:
            outcome = await hub.store_messages(messages)
            assert outcome.stored == len(messages), outcome

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(caller)
    return time.perf_counter() - start


async def best_rates(
    registry: Registry,
    event: dict[str, Any],
    config_for: Callable[[Path, str], str],
    modes: list[str],
    args: argparse.Namespace,
    *,
    prefix: str,
) -> dict[str, float]:
    """Events/s of the best round per mode; ``config_for(data_dir, mode)`` gives each mode's TOML
    (one source, key ``WRITE_KEY``). Hubs are built as the daemon builds them."""
    best = dict.fromkeys(modes, 0.0)
    matchers = list(registry.matchers.values())
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        hubs: dict[str, tuple[IngestHub, Source]] = {}
        async with trio.open_nursery() as nursery:
            opened = trio.Event()
            done = trio.Event()

            async def keep_open(mode: str, data_dir: Path) -> None:
                config: GatewayConfig = parse_config(config_for(data_dir, mode), registry)
                async with open_log(config.log, config.data_dir) as log:
                    classifier = Classifier(matchers, config.privacy)
                    hub = IngestHub(log, config, build_filters(config, registry), Metrics(), classifier)
                    source = hub.authenticate(WRITE_KEY, config.sources["web"].core.type)
                    assert source is not None
                    hubs[mode] = (hub, source)
                    if len(hubs) == len(modes):
                        opened.set()
                    await done.wait()

            for n, mode in enumerate(modes):
                nursery.start_soon(keep_open, mode, Path(tmp) / str(n))
            await opened.wait()
            for mode in modes:  # warm-up: caches, pages, the first commits
                hub, source = hubs[mode]
                await ingest_round(hub, source, copies(event, 1000, f"warm-{mode}"), args.batch, args.tasks)
            for round_no in range(args.rounds):
                for mode in modes:
                    hub, source = hubs[mode]
                    events = copies(event, args.events, f"{mode}-{round_no}")
                    rate = args.events / await ingest_round(hub, source, events, args.batch, args.tasks)
                    best[mode] = max(best[mode], rate)
                    print(f"  round {round_no + 1} {mode:<22} {rate:>9,.0f} events/s")
            done.set()
    return best


def print_table(best: dict[str, float], baseline: str, label: str, kept: str = "best") -> None:
    print()
    print(f"{'mode':<24}{f'events/s ({kept})':>18}{label:>16}")
    for mode, rate in best.items():
        print(f"{mode:<24}{rate:>18,.0f}{rate / best[baseline]:>16.2f}")


async def rates(
    registry: Registry,
    event: dict[str, Any],
    config_for: Callable[[Path, str], str],
    modes: list[str],
    args: argparse.Namespace,
    *,
    prefix: str,
) -> dict[str, float]:
    """Events/s per mode: through the HTTP API with ``--http`` (median rounds), else in process
    (best rounds)."""
    if args.http:
        return await trio.to_thread.run_sync(http_rates, event, config_for, modes, args)
    return await best_rates(registry, event, config_for, modes, args, prefix=prefix)


def report_cost(
    best: dict[str, float], baseline: str, measured: str, what: str, target: float, args: argparse.Namespace
) -> None:
    """The table, then what ``measured`` costs against ``baseline`` and whether that meets ``target``."""
    print_table(best, baseline, f"vs {baseline}", "median" if args.http else "best")
    report_target(best, baseline, measured, what, target, args)


def report_target(
    best: dict[str, float], baseline: str, measured: str, what: str, target: float, args: argparse.Namespace
) -> None:
    """What ``measured`` costs against ``baseline`` and whether that meets ``target``."""
    cost = 1 - best[measured] / best[baseline]
    verdict = "within" if cost <= target else "OVER"
    where = "through the HTTP API (median rounds)" if args.http else "in process (best rounds)"
    print(f"\n{what} costs {cost:.0%} of ingest throughput {where}: {verdict} the {target:.0%} target")
