"""In-process ingest benchmarks: IngestHub.ingest on a real SQLite log, one hub per mode, the
modes measured in turn over several rounds (best round kept). Shared by privacy.py and
filter_chain.py so both compare their modes the same way."""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

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
    parser.add_argument(
        "--one-event",
        action="store_true",
        help="copies of one event (the benchmarks before 2026-12-07: flatters every cache), not varied ones",
    )
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the heap to the collector (before 2026-12-07 20:30 UTC): each full collection then walks the "
        "startup heap and the round's events, and how often one runs depends on the heap's size",
    )
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


#: ``make_events(count, prefix)``: ``count`` fresh events, each with its own messageId (from ``prefix``).
MakeEvents = Callable[[int, str], list[dict[str, Any]]]


def event_maker(event: dict[str, Any], vary: Callable[[dict[str, Any], random.Random], None]) -> MakeEvents:
    """Fresh copies of ``event``, each changed by ``vary(copy, rng)`` (event names, users, values),
    from a generator seeded by the prefix: every mode and round gets its own events, the same
    ones on every run."""

    def make(count: int, prefix: str) -> list[dict[str, Any]]:
        rng = random.Random(prefix)
        events = copies(event, count, prefix)
        for copy in events:
            vary(copy, rng)
        return events

    return make


def events_for(
    args: argparse.Namespace, event: dict[str, Any], vary: Callable[[dict[str, Any], random.Random], None]
) -> MakeEvents:
    """The benchmark's events: varied ones, or with ``--one-event`` copies of ``event``."""
    return (lambda count, prefix: copies(event, count, prefix)) if args.one_event else event_maker(event, vary)


async def ingest_round(
    hub: IngestHub, source: Source, events: list[dict[str, Any]], batch: int, tasks: int
) -> tuple[float, float]:
    """Seconds to ingest ``events`` in batches of ``batch`` from ``tasks`` concurrent callers,
    and the CPU seconds the process spent meanwhile (the log's commit thread included)."""
    batches = [[(source, e) for e in events[i : i + batch]] for i in range(0, len(events), batch)]
    next_batch = iter(batches)

    async def caller() -> None:
        for messages in next_batch:
            outcome = await hub.store_messages(messages)
            assert outcome.stored == len(messages), outcome

    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(caller)
    return time.perf_counter() - start, time.process_time() - cpu


class Measured(NamedTuple):
    """Events/s per mode (best or median round), and CPU µs per event per mode (median round;
    None through HTTP, where the gateway is another process)."""

    rates: dict[str, float]
    cpu_us: dict[str, float] | None


async def best_rates(
    registry: Registry,
    make_events: MakeEvents,
    config_for: Callable[[Path, str], str],
    modes: list[str],
    args: argparse.Namespace,
    *,
    prefix: str,
) -> Measured:
    """Events/s of the best round per mode, and the median CPU per event; ``config_for(data_dir,
    mode)`` gives each mode's TOML (one source, key ``WRITE_KEY``). Hubs are built as the daemon
    builds them."""
    best = dict.fromkeys(modes, 0.0)
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
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
                await ingest_round(hub, source, make_events(1000, f"warm-{mode}"), args.batch, args.tasks)
            freeze = not args.no_freeze
            for round_no in range(args.rounds):
                for mode in modes:
                    hub, source = hubs[mode]
                    events = make_events(args.events, f"{mode}-{round_no}")
                    if freeze:
                        # As the daemon does after startup (serve_gateway's freeze_heap): what is
                        # built so far is never walked again; the round's events too, which the
                        # daemon never holds (a request's die with it). Otherwise the collector's
                        # full passes over them were ~40% of the CPU of an event, and they ran
                        # more often on a smaller heap: a change that imported less made the
                        # baseline dearer and the filters' share smaller.
                        gc.collect()
                        gc.freeze()
                    seconds, cpu_seconds = await ingest_round(hub, source, events, args.batch, args.tasks)
                    if freeze:
                        gc.unfreeze()
                    del events
                    rate = args.events / seconds
                    best[mode] = max(best[mode], rate)
                    cpu[mode].append(cpu_seconds / args.events * 1e6)
                    print(
                        f"  round {round_no + 1} {mode:<22} {rate:>9,.0f} events/s {cpu[mode][-1]:>7.1f} µs CPU/event"
                    )
            done.set()
    return Measured(best, {mode: statistics.median(values) for mode, values in cpu.items()})


def print_table(measured: Measured, baseline: str, label: str, kept: str = "best") -> None:
    best, cpu = measured
    print()
    print(f"{'mode':<24}{f'events/s ({kept})':>18}{label:>16}" + (f"{'µs CPU/event (median)':>24}" if cpu else ""))
    for mode, rate in best.items():
        print(f"{mode:<24}{rate:>18,.0f}{rate / best[baseline]:>16.2f}" + (f"{cpu[mode]:>24.1f}" if cpu else ""))


async def rates(
    registry: Registry,
    event: dict[str, Any],
    make_events: MakeEvents,
    config_for: Callable[[Path, str], str],
    modes: list[str],
    args: argparse.Namespace,
    *,
    prefix: str,
) -> Measured:
    """Events/s per mode: through the HTTP API with ``--http`` (median rounds, copies of
    ``event``), else in process (best rounds, ``make_events``; with the CPU per event)."""
    if args.http:
        return Measured(await trio.to_thread.run_sync(http_rates, event, config_for, modes, args), None)
    return await best_rates(registry, make_events, config_for, modes, args, prefix=prefix)


def report_cost(
    measured: Measured, baseline: str, what_mode: str, what: str, target: float, args: argparse.Namespace
) -> None:
    """The table, then what ``what_mode`` costs against ``baseline`` and whether that meets ``target``."""
    print_table(measured, baseline, f"vs {baseline}", "median" if args.http else "best")
    report_target(measured, baseline, what_mode, what, target, args)


def report_target(
    measured: Measured, baseline: str, what_mode: str, what: str, target: float, args: argparse.Namespace
) -> None:
    """What ``what_mode`` costs against ``baseline`` (in throughput, and in CPU per event: the
    share of the CPU per event that is the cost, less sensitive to other load on the machine),
    and whether that meets ``target``."""
    best, cpu = measured
    cost = 1 - best[what_mode] / best[baseline]
    verdict = "within" if cost <= target else "OVER"
    where = "through the HTTP API (median rounds)" if args.http else "in process (best rounds)"
    events = "copies of one event" if args.one_event or args.http else "varied events"
    print(f"\n{what} costs {cost:.0%} of ingest throughput {where}, {events}: {verdict} the {target:.0%} target")
    if cpu:
        cpu_cost = 1 - cpu[baseline] / cpu[what_mode]
        verdict = "within" if cpu_cost <= target else "OVER"
        print(
            f"  in CPU per event (median rounds): {cpu[baseline]:.1f} -> {cpu[what_mode]:.1f} µs, "
            f"{cpu_cost:.0%} of it the cost: {verdict} the {target:.0%} target"
        )
