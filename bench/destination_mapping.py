"""The analytics destinations' ``send()`` with the request stubbed: what mapping a batch costs
(CPU µs a message), and a check that a change leaves every request byte for byte as it was.

    .venv/bin/python bench/destination_mapping.py                        # CPU µs/msg, 5 rounds
    .venv/bin/python bench/destination_mapping.py --profile posthog      # cProfile of one
    .venv/bin/python bench/destination_mapping.py --write-requests before.json
    .venv/bin/python bench/destination_mapping.py --check-requests before.json

Timing: ``bench/destinations.py``'s messages (500 users), stored as the gateway stores them
(server fields added), sent in batches of the type's ``batch_max_messages``; ``HttpDelivery.post``
answers ``200 {"status": 1}`` at once. The request check sends those messages and a varied set
(every call type, Ecommerce events with and without products, ``integrations`` options, odd
event and property names and values, odd contexts and times) in batches of 25, and records
every request (URL, body, form, params, headers) and every ``send()`` outcome.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import hashlib
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway import HttpDelivery, Record
from gateway.components import DestinationContext
from gateway.kit.http_client import HttpResponse, SentRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from destinations import VENDORS, messages

DESTINATIONS = ("posthog", "amplitude", "mixpanel", "ga4")
URL = "http://127.0.0.1:9"
RECEIVED_MS = 1_765_080_000_000

_sent: list[Any] = []


async def _stub_post(self: HttpDelivery, url: str, **kwargs: Any) -> HttpResponse:
    if "json" in kwargs and kwargs["json"] is not None:
        kwargs["json"] = msgspec.json.encode(kwargs["json"]).decode()
    if isinstance(kwargs.get("content"), bytes):
        kwargs["content"] = kwargs["content"].decode()
    _sent.append([url, {k: v for k, v in sorted(kwargs.items()) if v is not None}])
    return HttpResponse(200, {}, b'{"status": 1}', SentRequest("POST", url, {}, b""))  # type: ignore[arg-type]


def stored(message: dict[str, Any], n: int) -> dict[str, Any]:
    """``message`` as the log stores it: with the fields the gateway adds."""
    out = dict(message)
    out.setdefault("messageId", f"m-{n}")
    out.setdefault("timestamp", f"2026-12-07T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z")
    out.setdefault("originalTimestamp", "2026-12-07T10:00:00.000Z")
    out["receivedAt"] = "2026-12-07T10:00:01.000Z"
    out["sentAt"] = "2026-12-07T10:00:00.500Z"
    context = out.get("context")
    if isinstance(context, dict) and "library" not in context:
        out["context"] = {**context, "library": {"name": "analytics-python", "version": "2.3.3"}}
    return out


def varied() -> list[dict[str, Any]]:
    """Messages meant to reach every branch of the mappings."""
    product = {"product_id": "p-1", "sku": "S-1", "name": "Mug", "price": 12.5, "quantity": 2, "category": "K"}
    odd_names = [
        "",
        "  spaced  ",
        "Ünïcödé 🎉",
        "x" * 60,
        "2fa done",
        "firebase_thing",
        "ga_x",
        "_under",
        "page_view",
        "session_start",
        "$identify",
        "Video Played",
        "a.b-c/d",
        "Signed Up",
        "Signed In",
    ]
    odd_props = {
        "has space": 1,
        "ünï": "é",
        "$set": {"a": 1},
        "y" * 50: "long" * 40,
        "nested": {"a": [1, {"b": None}]},
        "list": [1, "2", None],
        "none": None,
        "flag": True,
        "off": False,
        "big": 2**70,
        "neg": -3.5,
        "num_str": "12.50",
        "exp": "1e3",
        "url": "https://x.example/?q=1",
        "title": "T",
        "name": "N",
        "revenue": "19.99",
        "total": 30,
        "value": "7",
        "currency": "eur",
        "order_id": 77,
        "query": "mugs",
        "price": "3",
        "quantity": "2",
        "products": [product, "junk", {**product, "price": None, "quantity": "x"}],
    }
    contexts: list[Any] = [
        None,
        {},
        {"ip": None, "locale": "fr-FR", "userAgent": "UA"},
        {
            "device": {"id": "dev-1", "advertisingId": "ad-1", "type": "ios", "model": "X", "manufacturer": "Apple"},
            "os": {"name": "iOS", "version": "17"},
            "app": {"version": "1.2", "name": "App", "build": "7"},
            "network": {"carrier": "C", "wifi": True},
            "screen": {"width": 390, "height": 844},
            "location": {"country": "FR", "city": "Paris", "latitude": 48.8, "longitude": 2.3},
            "traits": {"email": "t@example.com", "name": "T"},
            "groupId": "g-9",
            "timezone": "Europe/Paris",
        },
        {
            "device": {"advertisingId": "ad-2"},
            "os": {"name": "Android"},
            "page": {"url": "https://a/b", "title": "PT", "referrer": "https://r", "path": "/b", "search": "?q"},
            "campaign": {"name": "c", "source": "s", "medium": "m", "term": "t", "content": "ct", "other": "o"},
            "referrer": {"id": "r"},
            "ip": "10.0.0.1",
        },
        {"device": "not an object", "page": None, "os": {"name": None}, "traits": "x", "library": {"name": "l"}},
    ]
    integrations: list[Any] = [
        None,
        {},
        {"All": False},
        {"Amplitude": {"session_id": 17}},
        {"Amplitude": {"session_id": "18"}},
        {"Actions Amplitude": {"session_id": 1.5}},
        {"Amplitude": True},
        {"Google Analytics 4": {"clientId": "c.1"}},
        {"Google Analytics 4": {"_ga": "GA1.1.123.456", "session_id": 99}},
        {"Actions Google Analytics 4": {"client_id": "c2"}},
        {"Mixpanel": {"x": 1}},
        {"PostHog": {"x": 1}},
        {"Segment.io": False},
    ]
    ecommerce = [
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Product Clicked",
        "Product Added to Wishlist",
        "Products Searched",
        "Product List Viewed",
        "Cart Viewed",
        "Checkout Started",
        "Payment Info Entered",
        "Order Completed",
        "Order Refunded",
        "Promotion Viewed",
    ]
    times: list[dict[str, Any]] = [
        {},
        {"timestamp": "2026-12-07T10:00:00+02:00"},
        {"timestamp": "2026-12-07T10:00:00"},
        {"timestamp": "not a time"},
        {"timestamp": None, "originalTimestamp": "2026-12-06T00:00:00.5Z"},
        {"timestamp": 12345},
        {"messageId": None},
        {"messageId": 42},
    ]
    users = [
        {"userId": "u-1", "anonymousId": "a-1"},
        {"userId": None, "anonymousId": "a-2"},
        {"userId": "u-3"},
        {"userId": "anonymous", "anonymousId": "a-4"},
        {"userId": "null"},
        {"userId": "5", "anonymousId": "6"},
        {"userId": "u-7", "anonymousId": "u-7"},
        {},
    ]
    out: list[dict[str, Any]] = []
    n = 0

    def add(message: dict[str, Any]) -> None:
        nonlocal n
        n += 1
        base = {
            **users[n % len(users)],
            "context": copy.deepcopy(contexts[n % len(contexts)]),
            **times[n // 3 % len(times)],
        }
        option = integrations[n // 2 % len(integrations)]
        if option is not None:
            base["integrations"] = option
        out.append({**base, **message})

    props_variants: list[Any] = [
        odd_props,
        {},
        None,
        {"a": 1},
        {**product, "currency": "usd"},
        {"order_id": "o", "total": "40.5", "products": [product, product]},
        # Keys the mappings set themselves or take from the context: an event's own win or lose.
        {
            "ip": "192.0.2.9",
            "$current_url": "https://own.example",
            "utm_source": "own",
            "$os": "own",
            "time": 1,
            "distinct_id": "own",
            "$insert_id": "own",
            "mp_lib": "own",
            "$user_id": "own",
            "$device_id": "own",
            "user_id": "own",
            "insert_id": "own",
            "platform": "own",
            "$lib": "own",
        },
    ]
    for repeat in range(3):
        for name in odd_names + ecommerce:
            for properties in props_variants:
                add({"type": "track", "event": name, "properties": copy.deepcopy(properties)})
        for kind in ("page", "screen"):
            for name in (None, "", "Home", "Ünï"):
                for properties in props_variants[:4]:
                    add(
                        {
                            "type": kind,
                            "name": name,
                            "category": "Cat" if repeat else None,
                            "properties": copy.deepcopy(properties),
                        }
                    )
        for traits in ({"email": "e@example.com", "plan": "pro", "$x": 1}, {}, None, {"name": "Acme", "type": "t"}):
            add({"type": "identify", "traits": copy.deepcopy(traits)})
            add({"type": "group", "groupId": "g-1" if traits else None, "traits": copy.deepcopy(traits)})
        for previous in ("a-old", "anonymous", "", None, 3):
            add({"type": "alias", "previousId": previous})
        add({"type": "mystery"})
        add({"type": "track", "properties": {"no": "event"}, "event": None})
    return [stored(message, i) for i, message in enumerate(out)]


def build(name: str, directory: Path) -> Any:
    """A destination of type ``name`` as bench/destinations.py configures it, and its batch size."""
    from gateway.plugins import make_plugin_manager

    pm = make_plugin_manager()
    for types in pm.hook.gateway_destination_types():
        for kind in types:
            if kind.name == name:
                import tomllib

                raw = tomllib.loads(VENDORS[name].format(url=URL))
                config = msgspec.convert(raw, kind.config_type)
                defaults = kind.delivery_defaults
                if callable(defaults):
                    defaults = defaults(config)
                destination = kind.factory(config, DestinationContext(id=f"bench_{name}", data_dir=directory))
                return destination, int((defaults or {}).get("batch_max_messages", 500))
    raise SystemExit(f"no destination type {name!r}")


def records(bodies: list[dict[str, Any]]) -> list[Record]:
    return [Record(seq, "web", msgspec.json.encode(body), RECEIVED_MS + seq) for seq, body in enumerate(bodies, 1)]


async def _outcomes(destination: Any, batches: list[list[Record]]) -> list[Any]:
    out = []
    for batch in batches:
        try:
            result = await destination.send(batch)
            out.append(["ok", None if result is None else msgspec.to_builtins(result)])
        except Exception as error:
            out.append(["error", type(error).__name__, str(error)])
    return out


def requests_of(name: str, directory: Path) -> dict[str, Any]:
    destination, _ = build(name, directory)
    bench = records([stored(m, i) for i, m in enumerate(messages(2000))])
    odd = records(varied())
    batches = [bench[i : i + 250] for i in range(0, len(bench), 250)] + [
        odd[i : i + 25] for i in range(0, len(odd), 25)
    ]
    _sent.clear()
    outcomes = trio.run(_outcomes, destination, batches)
    # Concurrent requests (Mixpanel's imports and updates) may go out in either order.
    sent = sorted(_sent, key=lambda request: json.dumps(request, ensure_ascii=False))
    return {"requests": sent, "outcomes": outcomes, "status": destination.status()}


def cpu_per_message(name: str, directory: Path, count: int, rounds: int, profile: bool) -> list[float]:
    destination, batch_size = build(name, directory)
    bench = records([stored(m, i) for i, m in enumerate(messages(count))])
    batches = [bench[i : i + batch_size] for i in range(0, len(bench), batch_size)]
    results = []
    for _ in range(rounds):
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        trio.run(_outcomes, destination, batches)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        results.append((time.process_time() - started) / count * 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=list(DESTINATIONS))
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", metavar="DESTINATION")
    parser.add_argument("--write-requests", type=Path)
    parser.add_argument("--check-requests", type=Path)
    args = parser.parse_args()
    HttpDelivery.post = _stub_post  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if args.write_requests or args.check_requests:
            found = {name: requests_of(name, directory) for name in args.only}
            if args.write_requests:
                args.write_requests.write_text(json.dumps(found, ensure_ascii=False))
            for name, got in found.items():
                digest = hashlib.sha256(json.dumps(got, ensure_ascii=False).encode()).hexdigest()[:16]
                line = f"{name:10} {len(got['requests']):4} requests  {digest}"
                if args.check_requests:
                    want = json.loads(args.check_requests.read_text())[name]
                    same = json.loads(json.dumps(got, ensure_ascii=False)) == want
                    line += "  identical" if same else "  DIFFERENT"
                    if not same:
                        for i, (a, b) in enumerate(zip(want["requests"], got["requests"], strict=False)):
                            if a != b:
                                line += f"\n  first difference in request {i}:\n  {str(a)[:600]}\n  {str(b)[:600]}"
                                break
                        else:
                            line += f"\n  outcomes or status differ: {want['outcomes'] != got['outcomes']}"
                print(line)
            return
        if args.profile:
            cpu_per_message(args.profile, directory, args.messages, 1, profile=True)
            return
        for name in args.only:
            runs = cpu_per_message(name, directory, args.messages, args.rounds, profile=False)
            print(f"{name:10} {statistics.median(runs):6.2f} µs/msg CPU (runs {', '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
