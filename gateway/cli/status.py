"""``gateway status`` (what the running daemon is doing) and ``gateway destinations
flush|describe`` (one destination's batch now, or what it says of itself), through the admin API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gateway.cli.admin_api import call_admin, describe_destination, flush_destination
from gateway.config import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    status = commands.add_parser("status", help="what the running daemon is doing (admin API)")
    status.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(handler=_status)

    destinations = commands.add_parser(
        "destinations", help="flush a destination's batch now, or print what it says of itself (admin API)"
    )
    destinations.add_argument("action", choices=("flush", "describe"))
    destinations.add_argument("destination")
    destinations.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    destinations.add_argument(
        "--wait", type=float, default=300.0, help="flush: seconds to wait for the batch to be booked (default 300)"
    )
    destinations.set_defaults(handler=_destinations)


def _status(args: argparse.Namespace) -> int:
    status = call_admin(args.config, "GET", "/status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    readiness = status["ready"]
    ready = "ready" if readiness["ready"] else "NOT READY (" + "; ".join(readiness["reasons"]) + ")"
    print(
        f"gateway {status['version']}, up {status['uptime_secs']}s, {ready}, listening on {', '.join(status['listen'])}"
    )
    print(f"log: head seq {status['log']['head_seq']}, {status['log']['disk_bytes']} bytes on disk")
    print(f"reloads: {status['reloads']['ok']} ok, {status['reloads']['failed']} refused")
    for did, d in sorted(status["destinations"].items()):
        print(
            f"  {did} ({d['type']}): delivered {d['delivered']}, filtered {d['filtered']}, dead-lettered "
            f"{d['dead_lettered']}, retries {d['retries']}, backlog {d['backlog_messages']} messages"
            + (f", last error: {d['last_error']}" if d["last_error"] else "")
        )
        for line in format_details(d.get("details")):
            print(f"    {line}")
        for name, r in sorted(d.get("replays", {}).items()):
            span = f"{r['start_seq'] + 1}..{r['end_seq']}"
            print(f"    {name}: at seq {r['cursor']} of {span}, delivered {r['delivered']}")
    return 0


def format_details(details: Any) -> list[str]:
    """A destination's ``status()`` for people: its plain values on one line, then one line per
    table of plain values in it (a warehouse's ``last_load``); deeper structures are left to
    ``gateway status --json``."""
    if not isinstance(details, dict) or not details:
        return []
    lines = []
    plain = _plain(details)
    if plain:
        lines.append(plain)
    for key, value in details.items():
        if isinstance(value, dict) and _plain(value):
            lines.append(f"{key}: {_plain(value)}")
    return lines


def _plain(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {value}" for key, value in values.items() if isinstance(value, str | int | float) and value != ""
    )


def _destinations(args: argparse.Namespace) -> int:
    if args.action == "flush":
        answer = flush_destination(args.config, args.destination, args.wait)
        state = "done" if answer["done"] else f"still under way after {args.wait}s (see `gateway status`)"
        print(
            f"{args.destination}: flushed up to seq {answer['upto_seq']}: {state}; delivered {answer['delivered']}, "
            f"dead-lettered {answer['dead_lettered']}"
            + (f", last error: {answer['last_error']}" if answer["last_error"] else "")
        )
        return 0 if answer["done"] else 1
    print(json.dumps(describe_destination(args.config, args.destination), indent=2))
    return 0
