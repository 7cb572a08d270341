#!/usr/bin/env python3
"""Filter chain benchmark: ingest events/s through ``IngestHub.ingest`` in process, on a real
SQLite log in a temp dir, for a source with no filters against one with the data-governance
chain of issue 4: 5 FQL filters + a 20-rule tracking plan + the bot filter.

Each round ingests ``--events`` fresh copies of one realistic ``Order Completed`` track event
(copied before the clock starts: filters may change messages) in batches of ``--batch`` from
``--tasks`` concurrent callers, the way the HTTP source calls the hub. Every event passes every
filter (nothing is dropped, so both modes store the same number of rows); the plan validates it
against its TRACK rule and the COMMON rule. Modes alternate round by round; each mode's best
round is shown, and the cost of the chain as a share of ingest throughput (target: at most 30%).

    .venv/bin/python bench/filter_chain.py [--events 20000] [--rounds 5] [--batch 100] [--tasks 8]
    .venv/bin/python bench/filter_chain.py --synchronous normal   # no fsync per commit: CPU bound

Needs the fql, tracking_plan and bots filter plugins installed. It prints numbers; it is not a
test and never fails a build.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway.plugins import build_registry, make_plugin_manager
from gateway.telemetry import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inprocess import ORDER_COMPLETED, WRITE_KEY, add_arguments, rates, report_cost

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
    """20 rules: 17 TRACK events (one the benchmark's), IDENTIFY, GROUP and COMMON."""
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
    for n in range(16):
        rules.append(
            {
                "type": "TRACK",
                "key": f"Event {n}",
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
        f"event; {args.events} events per round in batches of {args.batch} from {args.tasks} callers; "
        f"synchronous = {args.synchronous}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        plan = Path(tmp) / "plan.json"
        plan.write_text(json.dumps(plan_document()))
        best = await rates(
            registry,
            EVENT,
            lambda data_dir, mode: config_for(data_dir, MODES[mode], args.synchronous, plan),
            list(MODES),
            args,
            prefix="bench-filter-chain-",
        )
    report_cost(best, "no filters", "5 fql + plan + bots", "the filter chain", 0.30, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    trio.run(main, parser.parse_args())
