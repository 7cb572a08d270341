#!/usr/bin/env python3
"""Filter chain benchmark: ingest events/s through ``IngestHub.ingest`` in process, on a real
SQLite log in a temp dir, for a source with no filters against one with the data-governance
chain of issue 4: 5 FQL filters + a 20-rule tracking plan + the bot filter.

Each round ingests ``--events`` fresh events (made before the clock starts: filters may change
messages) in batches of ``--batch`` from ``--tasks`` concurrent callers, the way the HTTP source
calls the hub. The events vary as a shop's do: half are ``Order Completed`` (orders, totals,
coupons or none, one to four products), the rest spread over the plan's 16 other events; 5,000
users, a few browsers, locales and pages, every IP its own. ``--one-event`` ingests copies of one
``Order Completed`` event instead (as before 2026-12-07: it flatters every cache). Every event
passes every filter (nothing is dropped, so both modes store the same number of rows); the plan
validates it against its TRACK rule and the COMMON rule. Modes alternate round by round; each
mode's best round is shown, its median CPU per event, and the cost of the chain as a share of
ingest throughput and of CPU per event (target: at most 30%).

    .venv/bin/python bench/filter_chain.py [--events 20000] [--rounds 5] [--batch 100] [--tasks 8]
    .venv/bin/python bench/filter_chain.py --synchronous normal   # no fsync per commit: CPU bound

Needs the fql, tracking_plan and bots filter plugins installed. It prints numbers; it is not a
test and never fails a build.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway.plugins import build_registry, make_plugin_manager
from gateway.telemetry import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inprocess import ORDER_COMPLETED, WRITE_KEY, add_arguments, events_for, rates, report_cost

EVENT: dict[str, Any] = {
    **ORDER_COMPLETED,
    "properties": {
        "order_id": "ORD-50314",
        "total": 142.5,
        "revenue": 118.0,
        "shipping": 12.5,
        "tax": 11.8,
        "coupon": "SPRING10",
        "currency": "EUR",
        "payment_method": "card",
        "quantity": 3,
        "products": [{"product_id": "p1", "sku": "SKU-0001", "price": 21.0, "quantity": 3}],
    },
}

#: The plan's 16 other TRACK events (each with an ``id`` and a ``value``).
OTHER_EVENTS = (
    "Product Viewed",
    "Product Clicked",
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Viewed",
    "Payment Info Entered",
    "Products Searched",
    "Product List Viewed",
    "Promotion Viewed",
    "Coupon Entered",
    "Coupon Applied",
    "Wishlist Product Added",
    "Product Shared",
    "Signed Up",
)
BROWSERS = (
    ORDER_COMPLETED["context"]["userAgent"],
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile",
)
LOCALES = ("en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "nl-NL")
PAGES = ("/", "/checkout/complete", "/products/lamp", "/cart", "/search", "/account", "/products/chair")


def vary(event: dict[str, Any], rng: random.Random) -> None:
    """Make ``event`` (a copy of EVENT) one of a shop's: see the module docstring."""
    event["userId"] = f"u_{rng.randrange(5000)}"
    context = event["context"]
    context["userAgent"] = rng.choice(BROWSERS)
    context["locale"] = rng.choice(LOCALES)
    context["ip"] = f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
    path = rng.choice(PAGES)
    context["page"] = {"path": path, "url": f"https://shop.example.com{path}"}
    if rng.random() < 0.5:
        event["event"] = rng.choice(OTHER_EVENTS)
        event["properties"] = {"id": f"p{rng.randrange(2000)}", "value": round(rng.uniform(1, 300), 2)}
        return
    properties = event["properties"]
    properties["order_id"] = f"ORD-{rng.randrange(10**6)}"
    properties["total"] = total = round(rng.uniform(5, 500), 2)
    properties["revenue"] = round(total * 0.83, 2)
    properties["tax"] = round(total * 0.083, 2)
    properties["shipping"] = rng.choice((0, 4.9, 12.5))
    properties["currency"] = rng.choice(("EUR", "USD", "GBP"))
    properties["payment_method"] = rng.choice(("card", "paypal", "apple_pay"))
    if rng.random() < 0.6:
        del properties["coupon"]
    products = [
        {"product_id": f"p{rng.randrange(2000)}", "sku": f"SKU-{rng.randrange(10**4):04}", "price": 21.0, "quantity": 1}
        for _ in range(rng.randint(1, 4))
    ]
    properties["products"] = products
    properties["quantity"] = len(products)


FQL_FILTERS = """
[filters.fql_tests]
type = "fql"
if = "event = 'Test Event' or match(context.library.name, 'test*')"
drop = true

[filters.fql_email]
type = "fql"
if = "type = 'track' and contains(properties.email, '@')"
drop_properties = { properties = ["email"] }

[filters.fql_internal]
type = "fql"
if = "userId in ['internal-1', 'internal-2', 'qa'] or lowercase(context.locale) = 'xx-xx'"
drop = true

[filters.fql_ip]
type = "fql"
if = "event = 'Order Completed'"
drop_properties = { context = ["ip"] }

[filters.fql_sample]
type = "fql"
if = "properties.total < 0 or length(properties.coupon) > 64"
sample = { percent = 0.5, path = "userId" }
"""


def plan_document() -> dict[str, Any]:
    """20 rules: 17 TRACK events (Order Completed and OTHER_EVENTS), IDENTIFY, GROUP and COMMON."""
    order = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "properties": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
                    "total": {"type": "number", "minimum": 0},
                    "revenue": {"type": "number"},
                    "shipping": {"type": "number"},
                    "tax": {"type": "number"},
                    "coupon": {"type": ["string", "null"]},
                    "currency": {"enum": ["EUR", "USD", "GBP"]},
                    "payment_method": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "products": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "product_id": {"type": "string"},
                                "sku": {"type": "string"},
                                "price": {"type": "number"},
                                "quantity": {"type": "integer"},
                            },
                            "required": ["product_id"],
                        },
                    },
                },
                "required": ["order_id", "total", "currency"],
            }
        },
        "required": ["properties"],
    }
    rules: list[dict[str, Any]] = [{"type": "TRACK", "key": "Order Completed", "version": 1, "jsonSchema": order}]
    for name in OTHER_EVENTS:
        rules.append(
            {
                "type": "TRACK",
                "key": name,
                "jsonSchema": {
                    "properties": {
                        "properties": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "value": {"type": "number"}},
                            "required": ["id"],
                        }
                    }
                },
            }
        )
    rules += [
        {"type": "IDENTIFY", "jsonSchema": {"properties": {"traits": {"properties": {"email": {"type": "string"}}}}}},
        {"type": "GROUP", "jsonSchema": {"properties": {"traits": {"properties": {"name": {"type": "string"}}}}}},
        {
            "type": "COMMON",
            "jsonSchema": {
                "type": "object",
                "properties": {
                    "context": {
                        "type": "object",
                        "properties": {
                            "library": {"type": "object", "required": ["name"]},
                            "locale": {"type": "string"},
                        },
                    },
                    "messageId": {"type": "string"},
                },
                "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
            },
        },
    ]
    assert len(rules) == 20
    return {"name": "Bench", "rules": rules}


CHAIN = ["fql_tests", "fql_email", "fql_internal", "fql_ip", "fql_sample", "plan", "bots"]


def config_for(data_dir: Path, chain: bool, synchronous: str, plan: Path) -> str:
    text = (
        f'[server]\ndata_dir = "{data_dir}"\n[log]\nsynchronous = "{synchronous}"\n'
        f'[sources.web]\nwrite_key = "{WRITE_KEY}"\n'
    )
    if chain:
        text += f"filters = {json.dumps(CHAIN)}\n"
    return (
        text
        + FQL_FILTERS
        + f'\n[filters.plan]\ntype = "tracking_plan"\nplan = "{plan}"\nunplanned_events = "block"\n'
        + 'unplanned_properties = "omit"\nviolations = "block"\ncommon_violations = "block"\n'
        + '\n[filters.bots]\ntype = "bots"\naction = "drop"\n'
    )


MODES = {"no filters": False, "5 fql + plan + bots": True}


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    registry = build_registry(make_plugin_manager())
    print(
        f"python {platform.python_version()} on {platform.machine()}, {len(msgspec.json.encode(EVENT))} bytes per "
        f"event; {'copies of one event' if args.one_event else 'varied events'}, {args.events} per round in "
        f"batches of {args.batch} from {args.tasks} callers; "
        f"synchronous = {args.synchronous}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        plan = Path(tmp) / "plan.json"
        plan.write_text(json.dumps(plan_document()))
        measured = await rates(
            registry,
            EVENT,
            events_for(args, EVENT, vary),
            lambda data_dir, mode: config_for(data_dir, MODES[mode], args.synchronous, plan),
            list(MODES),
            args,
            prefix="bench-filter-chain-",
        )
    report_cost(measured, "no filters", "5 fql + plan + bots", "the filter chain", 0.30, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    trio.run(main, parser.parse_args())
