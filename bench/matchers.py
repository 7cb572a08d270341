#!/usr/bin/env python3
"""Matcher benchmark: how many event fields per second the built-in privacy matchers classify.

It prints numbers; it is not a test and asserts nothing. It takes a realistic nested track event
(analytics.js context, identify-style traits, an order with products), walks every leaf of
``context``, ``traits`` and ``properties`` (objects and arrays included) and classifies each field
the way a privacy stage would through the plugin API: every matcher's ``match_key`` on the field's
own key and ``match_value`` on its value (all of them: an inventory records every hit), the most
severe class wins (red > yellow > green).

Runs, each the best of ``--repeat`` rounds of ``--seconds`` after one warm-up event:

- ``keys+values, key cache on``: the default matchers (``build_matchers()``);
- ``keys+values, key cache off``: ``build_matchers(cache_size=0)``, every key normalised and
  decided anew for every matcher;
- ``keys only`` (cache on and off) and ``values only``, to show where the time goes;
- ``keys, one KeyIndex.hits per field, cache off``: the cost of a cache miss when a stage decides
  a key once for all matchers (``KeyIndex.hits``) instead of once per matcher.

    .venv/bin/python bench/matchers.py [--seconds 0.5] [--repeat 5]

Needs the plugin installed: ``.venv/bin/pip install -e plugins/gateway-matcher-builtin``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gateway_matcher_builtin import SPECS, KeyIndex, build_matchers

from gateway import MatcherType

SEVERITY = {"green": 0, "yellow": 1, "red": 2}
CLASSES = ("green", "yellow", "red")

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u_8842",
    "anonymousId": "2f4c8f0e-8b0a-4f6e-9c51-3c3e2f9d1a77",
    "messageId": "ajs-next-1733923442123-8e1b3c5d",
    "timestamp": "2026-05-09T07:35:25.123Z",
    "context": {
        "library": {"name": "analytics.js", "version": "next-1.84.1"},
        "page": {
            "path": "/checkout/complete",
            "referrer": "https://shop.example.com/cart",
            "search": "?step=3",
            "title": "Thank you for your order",
            "url": "https://shop.example.com/checkout/complete?step=3",
        },
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
        "userAgentData": {
            "brands": [{"brand": "Chromium", "version": "124"}, {"brand": "Google Chrome", "version": "124"}],
            "mobile": False,
            "platform": "macOS",
        },
        "locale": "en-US",
        "timezone": "Europe/Paris",
        "ip": "203.0.113.42",
        "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email", "term": "shoes"},
        "traits": {"email": "jane.doe@example.com", "plan": "premium"},
    },
    "traits": {
        "email": "jane.doe@example.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "phone": "+33 6 12 34 56 78",
        "birthday": "1990-04-12",
        "address": {"street": "12 rue de la Paix", "city": "Paris", "postalCode": "75002", "country": "FR"},
        "company": {"name": "Example SA", "industry": "Retail", "employee_count": 120},
        "plan": "premium",
        "createdAt": "2024-01-15T10:00:00Z",
    },
    "properties": {
        "order_id": "ORD-50314",
        "checkout_id": "chk_7d1e",
        "affiliation": "Online Store",
        "total": 142.5,
        "subtotal": 130.0,
        "revenue": 118.0,
        "shipping": 12.5,
        "tax": 11.8,
        "discount": 10.0,
        "coupon": "SPRING10",
        "currency": "EUR",
        "payment_method": "card",
        "card_last4": "4242",
        "billing_email": "billing@example.com",
        "products": [
            {
                "product_id": f"p{i}",
                "sku": f"SKU-{i:04d}",
                "name": f"Product {i}",
                "price": 20.0 + i,
                "quantity": 1 + i % 3,
                "category": "Shoes",
                "brand": "Acme",
                "variant": "red",
                "url": f"https://shop.example.com/p/{i}",
                "image_url": f"https://cdn.example.com/p/{i}.jpg",
            }
            for i in range(3)
        ],
    },
}


def fields(event: dict[str, Any]) -> list[tuple[str, Any]]:
    """(own key, value) of every leaf under context, traits and properties."""

    def walk(obj: Any, key: str) -> Iterator[tuple[str, Any]]:
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, k)
        elif isinstance(obj, list):
            for item in obj:
                yield from walk(item, key)
        else:
            yield key, obj

    return [leaf for section in ("context", "traits", "properties") for leaf in walk(event.get(section), section)]


def classifier(matchers: Sequence[MatcherType], keys: bool = True, values: bool = True) -> Callable[[str, Any], str]:
    key_matchers = [(m.match_key, m.default_class) for m in matchers] if keys else []
    value_matchers = [(m.match_value, m.default_class) for m in matchers if m.match_value is not None] if values else []

    def classify(key: str, value: Any) -> str:
        # Every matcher runs (an inventory records all hits), the most severe class wins.
        worst = 0
        for match_key, cls in key_matchers:
            if match_key(key):
                worst = max(worst, SEVERITY[cls])
        for match_value, cls in value_matchers:
            if match_value(value):
                worst = max(worst, SEVERITY[cls])
        return CLASSES[worst]

    return classify


def index_classifier(matchers: Sequence[MatcherType], index: KeyIndex) -> Callable[[str, Any], str]:
    classes = {m.name: SEVERITY[m.default_class] for m in matchers}

    def classify(key: str, value: Any) -> str:
        return CLASSES[max((classes[name] for name in index.hits(key)), default=0)]

    return classify


def classify_fields(event_fields: list[tuple[str, Any]], classify: Callable[[str, Any], str]) -> dict[str, int]:
    counts = {"green": 0, "yellow": 0, "red": 0}
    for key, value in event_fields:
        counts[classify(key, value)] += 1
    return counts


def run(event_fields: list[tuple[str, Any]], classify: Callable[[str, Any], str], seconds: float, repeat: int) -> float:
    """Fields per second: the best of ``repeat`` timed rounds of ``seconds`` each (the least
    disturbed by whatever else runs on the machine)."""
    classify_fields(event_fields, classify)  # warm-up: fills the key cache when there is one
    best = 0.0
    for _ in range(repeat):
        events = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(5):
                classify_fields(event_fields, classify)
            events += 5
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, events * len(event_fields) / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="seconds per timed round (default 0.5)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per run; the best is shown (default 5)")
    args = parser.parse_args()

    event_fields = fields(EVENT)
    cached = build_matchers()
    uncached = build_matchers(cache_size=0)
    counts = classify_fields(event_fields, classifier(cached))
    assert counts == classify_fields(event_fields, classifier(uncached))

    print(f"python {platform.python_version()} on {platform.machine()}, {len(cached)} matchers")
    print(f"event: {len(event_fields)} fields under context/traits/properties -> {counts}")
    runs = [
        ("keys+values, key cache on", classifier(cached)),
        ("keys+values, key cache off", classifier(uncached)),
        ("keys only,   key cache on", classifier(cached, values=False)),
        ("keys only,   key cache off", classifier(uncached, values=False)),
        ("values only", classifier(cached, keys=False)),
        ("keys, 1 hits()/field, off", index_classifier(cached, KeyIndex(SPECS, cache_size=0))),
    ]
    results = {}
    print(f"{'run':28} {'fields/s':>12} {'events/s':>10} {'us/field':>9}")
    for label, classify in runs:
        rate = run(event_fields, classify, args.seconds, args.repeat)
        results[label] = rate
        print(f"{label:28} {rate:12,.0f} {rate / len(event_fields):10,.0f} {1e6 / rate:9.2f}")
    speedup = results["keys+values, key cache on"] / results["keys+values, key cache off"]
    print(f"key cache speed-up (keys+values): x{speedup:.1f}")


if __name__ == "__main__":
    main()
