#!/usr/bin/env python3
"""Privacy benchmark: ingest events/s through ``IngestHub.ingest`` with the default matcher set
on (``block_red`` + ``inventory``) against off, in process, on a real SQLite log in a temp dir.

Each round ingests ``--events`` fresh identify-style track events (about 29 fields under context,
traits and properties: an email, a phone, an address, a password, a card number...) in batches of
``--batch`` from ``--tasks`` concurrent callers, the way the HTTP source calls the hub. The
events vary: 5,000 people (each with their own email, name, phone, address, card), three event
names, order ids, totals and products, a coupon in four orders of ten, a street in nine
addresses of ten (so a few shapes per event name), every IP its own. ``--one-event`` ingests
copies of one event instead (as before 2026-12-07: it flatters the value caches of ``every``).
The events are made before the clock starts (``block_red`` changes them in place). Modes
alternate round by round so drift hits them alike; each mode's best round is shown, its median
CPU per event, and the cost of matching as a share of ingest throughput and of CPU per event
(the issue's target: at most 25% for ``block_red + inventory``).

- ``off``: the source as configured by default: no matching at all;
- ``block_red``: Red fields removed before storage (one classification walk per message);
- ``block_red + inventory``: the same walk also feeds the field inventory.
- ``the same, every value``: both with ``[privacy] value_checks = "every"`` (every value of
  every message checked; the issue's target: at most 60%).

    .venv/bin/python bench/privacy.py [--events 20000] [--rounds 5] [--batch 100] [--tasks 8]
    .venv/bin/python bench/privacy.py --synchronous normal   # no fsync per commit: CPU bound

Needs the built-in matcher plugin installed (``plugins/gateway-matcher-builtin``). It prints
numbers; it is not a test and never fails a build.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway.plugins import build_registry, make_plugin_manager
from gateway.telemetry import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inprocess import ORDER_COMPLETED, WRITE_KEY, add_arguments, events_for, rates, report_cost, report_target

EVENT: dict[str, Any] = {
    **ORDER_COMPLETED,
    "traits": {
        "email": "jane.doe@example.com",
        "firstName": "Jane",
        "phone": "+33 6 12 34 56 78",
        "address": {"street": "12 rue de la Paix", "city": "Paris", "postalCode": "75002"},
        "plan": "premium",
        "password": "hunter2",
    },
    "properties": {
        "order_id": "ORD-50314",
        "total": 142.5,
        "revenue": 118.0,
        "shipping": 12.5,
        "tax": 11.8,
        "coupon": "SPRING10",
        "currency": "EUR",
        "payment_method": "card",
        "card": "4111 1111 1111 1111",
        "billing_email": "billing@example.com",
        "quantity": 3,
        "products": [{"product_id": "p1", "sku": "SKU-0001", "price": 21.0}],
    },
}
FIRST_NAMES = ("Jane", "John", "Amélie", "Lukas", "Sofia", "Noah", "Emma", "Mateo", "Yuki", "Omar")
CITIES = (("Paris", "75002"), ("Lyon", "69001"), ("Berlin", "10115"), ("Madrid", "28013"), ("London", "EC1A 1BB"))
EVENT_NAMES = ("Order Completed", "Checkout Started", "Order Refunded")


def card_number(rng: random.Random) -> str:
    """A 16-digit Visa-like number that passes the Luhn check, in groups of four."""
    digits = [4, *(rng.randrange(10) for _ in range(14))]
    total = sum(d if i % 2 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(digits))
    digits.append(-total % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i : i + 4] for i in range(0, 16, 4))


def vary(event: dict[str, Any], rng: random.Random) -> None:
    """Make ``event`` (a copy of EVENT) one person's: see the module docstring."""
    person = rng.randrange(5000)
    person_rng = random.Random(person)  # a person's details are the same in each of their events
    first = person_rng.choice(FIRST_NAMES)
    event["userId"] = f"u_{person}"
    event["event"] = rng.choice(EVENT_NAMES)
    event["context"]["ip"] = f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
    traits = event["traits"]
    traits["email"] = f"{first.lower()}.{person}@example.com"
    traits["firstName"] = first
    traits["phone"] = f"+33 6 {person_rng.randrange(10**8):08}"
    city, postal_code = person_rng.choice(CITIES)
    traits["address"] = {
        "street": f"{person_rng.randint(1, 120)} rue de la Paix",
        "city": city,
        "postalCode": postal_code,
    }
    if rng.random() < 0.1:
        del traits["address"]["street"]
    traits["plan"] = person_rng.choice(("free", "premium", "business"))
    traits["password"] = f"pw-{person_rng.getrandbits(40):x}"
    properties = event["properties"]
    properties["order_id"] = f"ORD-{rng.randrange(10**6)}"
    properties["total"] = total = round(rng.uniform(5, 500), 2)
    properties["revenue"] = round(total * 0.83, 2)
    properties["tax"] = round(total * 0.083, 2)
    properties["currency"] = rng.choice(("EUR", "USD", "GBP"))
    if rng.random() < 0.6:
        del properties["coupon"]
    properties["card"] = card_number(person_rng)
    properties["billing_email"] = traits["email"]
    properties["quantity"] = rng.randint(1, 4)
    properties["products"] = [
        {"product_id": f"p{rng.randrange(2000)}", "sku": f"SKU-{rng.randrange(10**4):04}", "price": 21.0}
        for _ in range(properties["quantity"])
    ]


MODES = {
    "off": "",
    "block_red": "block_red = true\n",
    "block_red + inventory": "block_red = true\ninventory = true\n",
    "the same, every value": 'block_red = true\ninventory = true\n[privacy]\nvalue_checks = "every"\n',
}


def count_fields(node: Any) -> int:
    if isinstance(node, dict):
        return sum(count_fields(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_fields(v) for v in node)
    return 1


def config_for(data_dir: Path, mode: str, synchronous: str) -> str:
    return (
        f'[server]\ndata_dir = "{data_dir}"\n[log]\nsynchronous = "{synchronous}"\n'
        f'[sources.web]\nwrite_key = "{WRITE_KEY}"\n{MODES[mode]}'
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")  # not one privacy_field_seen line per new path and mode
    registry = build_registry(make_plugin_manager())
    print(
        f"python {platform.python_version()} on {platform.machine()}, {len(registry.matchers)} matchers, "
        f"{count_fields({k: EVENT[k] for k in ('context', 'traits', 'properties')})} fields per event, "
        f"{len(msgspec.json.encode(EVENT))} bytes; {'copies of one event' if args.one_event else 'varied events'}, "
        f"{args.events} per round in batches of {args.batch} "
        f"from {args.tasks} callers; synchronous = {args.synchronous}"
    )
    measured = await rates(
        registry,
        EVENT,
        events_for(args, EVENT, vary),
        lambda data_dir, mode: config_for(data_dir, mode, args.synchronous),
        list(MODES),
        args,
        prefix="bench-privacy-",
    )
    report_cost(measured, "off", "block_red + inventory", "matching (block_red + inventory)", 0.25, args)
    report_target(measured, "off", "the same, every value", 'matching with value_checks = "every"', 0.60, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    trio.run(main, parser.parse_args())
