#!/usr/bin/env python3
"""Privacy benchmark: ingest events/s through ``IngestHub.ingest`` with the default matcher set
on (``block_red`` + ``inventory``) against off, in process, on a real SQLite log in a temp dir.

Each round ingests ``--events`` fresh copies of one realistic identify-style track event (29
fields under context, traits and properties: an email, a phone, an address, a password, a card
number...) in batches of ``--batch`` from ``--tasks`` concurrent callers, the way the HTTP
source calls the hub. The copies are made before the clock starts (``block_red`` changes them in
place, so each call needs its own). Modes alternate round by round so drift hits them alike;
each mode's best round is shown, and the cost of matching as a share of ingest throughput
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
import sys
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway.plugins import build_registry, make_plugin_manager
from gateway.telemetry import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inprocess import ORDER_COMPLETED, WRITE_KEY, add_arguments, rates, report_cost, report_target

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
        f"{len(msgspec.json.encode(EVENT))} bytes; {args.events} events per round in batches of {args.batch} "
        f"from {args.tasks} callers; synchronous = {args.synchronous}"
    )
    best = await rates(
        registry,
        EVENT,
        lambda data_dir, mode: config_for(data_dir, mode, args.synchronous),
        list(MODES),
        args,
        prefix="bench-privacy-",
    )
    report_cost(best, "off", "block_red + inventory", "matching (block_red + inventory)", 0.25, args)
    report_target(best, "off", "the same, every value", 'matching with value_checks = "every"', 0.60, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    trio.run(main, parser.parse_args())
