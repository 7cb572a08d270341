"""FQL evaluation speed: evaluations per second of typical destination-filter conditions.

Each expression is compiled once (as the gateway does at config load), then evaluated on one
realistic track event in a tight loop; the table shows the best of ``--repeat`` runs. For scale it
also times the things around a filter in the delivery path: decoding the stored JSON body (the
worker does it once per record) and a whole ``fql`` filter with a ``drop_properties`` action.

    .venv/bin/pip install -e plugins/gateway-filter-fql
    .venv/bin/python bench/fql.py [--number 200000] [--repeat 5]

It prints numbers; it is not a test and never fails a build.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable
from typing import Any

import msgspec
from gateway_filter_fql import FQLFilter, FQLFilterConfig, compile_expression

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-1234567",
    "anonymousId": "0c8f2a4e-9d1b-4d7e-8f6a-3b5c7d9e1f20",
    "messageId": "ajs-next-1700000000000-5f0c3b1e-2d4a-4b6c-8e9f-0a1b2c3d4e5f",
    "timestamp": "2026-01-15T10:20:30.123Z",
    "sentAt": "2026-01-15T10:20:30.456Z",
    "context": {
        "library": {"name": "analytics.js", "version": "next-1.64.0"},
        "page": {
            "path": "/checkout/confirmation",
            "referrer": "https://www.example.com/cart",
            "search": "?step=3",
            "title": "Thank you",
            "url": "https://www.example.com/checkout/confirmation?step=3",
        },
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        "locale": "en-GB",
        "ip": "203.0.113.7",
        "campaign": {"name": "winter_sale", "source": "newsletter", "medium": "email"},
        "traits": {"email": "jane@example.com", "plan": "pro"},
    },
    "properties": {
        "order_id": "50314b8e9bcf000000000000",
        "total": 127.5,
        "revenue": 112.0,
        "shipping": 5.5,
        "tax": 10.0,
        "currency": "EUR",
        "coupon": "WINTER10",
        "products": [
            {"product_id": "p-1", "sku": "45790-32", "name": "Monopoly", "price": 19.0, "quantity": 1},
            {"product_id": "p-2", "sku": "46493-32", "name": "Uno", "price": 3.0, "quantity": 2},
            {"product_id": "p-3", "sku": "47001-11", "name": "Catan", "price": 42.5, "quantity": 2},
        ],
    },
    "integrations": {"All": True},
}

EXPRESSIONS = [
    "type = 'track' and event = 'Order Completed'",
    "event in ['Order Completed', 'Product Viewed', 'Checkout Started'] and properties.revenue > 100",
    "match(context.page.path, '/checkout/*') or contains(lowercase(context.userAgent), 'bot')",
    "!(type in ['identify', 'group']) and length(userId) > 0 and typeof(properties.products) = 'list'",
    "context.library.name = 'analytics.js' and snakecase(event) = 'order_completed'",
]


def rate(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Best calls per second over ``repeat`` runs of ``number`` calls."""
    best = min(timeit.repeat(fn, number=number, repeat=repeat))
    return number / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--number", type=int, default=200_000, help="evaluations per run (default 200000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per expression; the best is shown (default 5)")
    args = parser.parse_args()

    print(f"{'evals/s':>12}  {'ns/eval':>8}  {'result':>6}  {'compile':>9}  expression")
    for expression in EXPRESSIONS:
        started = time.perf_counter()
        compile_expression.cache_clear()
        program = compile_expression(expression)
        compile_ms = (time.perf_counter() - started) * 1000
        matches = program.matches
        result = matches(EVENT)
        per_second = rate(lambda m=matches: m(EVENT), args.number, args.repeat)
        print(f"{per_second:>12,.0f}  {1e9 / per_second:>8.0f}  {result!s:>6}  {compile_ms:>7.2f}ms  {expression}")

    print()
    body = msgspec.json.encode(EVENT)
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    per_second = rate(lambda: decode(body), args.number // 4, args.repeat)
    print(f"{per_second:>12,.0f}  {1e9 / per_second:>8.0f}  decode of the {len(body)}-byte body (once per record)")
    config = msgspec.convert(
        {
            "if": EXPRESSIONS[1],
            "drop_properties": {"context": ["ip"], "context.traits": ["email"], "properties.products": ["sku"]},
        },
        FQLFilterConfig,
    )
    fql_filter = FQLFilter(config)
    message = decode(body)
    per_second = rate(lambda: fql_filter.process(message), args.number // 2, args.repeat)
    print(f"{per_second:>12,.0f}  {1e9 / per_second:>8.0f}  fql filter: expression 2 + drop_properties (3 parents)")


if __name__ == "__main__":
    main()
