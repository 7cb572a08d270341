"""``gateway warehouse sync|schema NAME`` and the destination details ``gateway status`` prints.

Generic over destinations: ``sync`` flushes through the admin API and prints what the
destination's ``status()`` says its last load did; ``schema`` prints ``describe()``'s
``schemas`` (schema -> table -> column -> type), the shape the warehouse destinations give.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable
from functools import partial
from typing import Any

from gateway.config import DEFAULT_CONFIG_PATH
from gateway.errors import GatewayError

Admin = Callable[..., Any]


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


def add_warehouse_commands(commands: Any, admin: Admin) -> None:
    """Add ``warehouse`` to the ``gateway`` command's subparsers; ``admin`` calls the admin API."""
    warehouse = commands.add_parser(
        "warehouse", help="load a warehouse destination now, or print its tables and columns (admin API)"
    )
    warehouse.add_argument("action", choices=("sync", "schema"))
    warehouse.add_argument("destination")
    warehouse.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    warehouse.add_argument(
        "--wait", type=float, default=900.0, help="sync: seconds to wait for the load to commit (default 900)"
    )
    warehouse.set_defaults(handler=partial(_warehouse, admin))


def _warehouse(admin: Admin, args: argparse.Namespace) -> int:
    name = urllib.parse.quote(args.destination, safe="")
    if args.action == "schema":
        return _schema(admin, args, name)
    before = _details(admin, args, name)
    answer = admin(args.config, "POST", f"/destinations/{name}/flush?wait_secs={args.wait}", timeout=args.wait + 30)
    after = _details(admin, args, name)
    if not answer["done"]:
        print(f"{args.destination}: the load is still under way after {args.wait}s (see `gateway status`)")
        return 1
    last = after.get("last_load")
    if not isinstance(last, dict) or after.get("loads") == before.get("loads"):
        error = after.get("last_error") or answer.get("last_error")
        state = f"; last error: {error}" if error else ""
        print(f"{args.destination}: nothing new to load (up to seq {answer['upto_seq']}){state}")
        return 0
    print(
        f"{args.destination}: loaded {last['messages']} messages as {last['rows']} rows "
        f"(seq {last['first_seq']}..{last['last_seq']}) in {last['duration_secs']}s, "
        f"{last['discards']} values to discards"
    )
    for table in last.get("tables_created") or []:
        print(f"  created {table}")
    for table, columns in (last.get("columns_added") or {}).items():
        print(f"  added to {table}: {', '.join(columns)}")
    return 0


def _details(admin: Admin, args: argparse.Namespace, name: str) -> dict[str, Any]:
    status = admin(args.config, "GET", "/status")
    destination = status["destinations"].get(args.destination)
    if destination is None:
        raise GatewayError(f"no running destination {args.destination!r}")
    details = destination.get("details")
    return details if isinstance(details, dict) else {}


def _schema(admin: Admin, args: argparse.Namespace, name: str) -> int:
    details = admin(args.config, "GET", f"/destinations/{name}").get("details") or {}
    schemas = details.get("schemas") if isinstance(details, dict) else None
    if not isinstance(schemas, dict):
        raise GatewayError(f"{args.destination} describes no schemas (is it a warehouse destination?)")
    if not schemas:
        print(f"{args.destination}: nothing loaded yet")
    for schema, tables in sorted(schemas.items()):
        for table, columns in sorted(tables.items()):
            print(f"{schema}.{table}")
            width = max((len(column) for column in columns), default=0)
            for column, kind in columns.items():
                print(f"  {column.ljust(width)}  {kind}")
    return 0
