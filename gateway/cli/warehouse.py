"""``gateway warehouse sync|schema NAME``, through the admin API.

Generic over destinations: ``sync`` flushes through the admin API and prints what the
destination's ``status()`` says its last load did; ``schema`` prints ``describe()``'s
``schemas`` (schema -> table -> column -> type), the shape the warehouse destinations give.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.cli.admin_api import call_admin, describe_destination, flush_destination
from gateway.config import DEFAULT_CONFIG_PATH
from gateway.errors import GatewayError

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    warehouse = commands.add_parser(
        "warehouse", help="load a warehouse destination now, or print its tables and columns (admin API)"
    )
    warehouse.add_argument("action", choices=("sync", "schema"))
    warehouse.add_argument("destination")
    warehouse.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    warehouse.add_argument(
        "--wait", type=float, default=900.0, help="sync: seconds to wait for the load to commit (default 900)"
    )
    warehouse.set_defaults(handler=_warehouse)


def _warehouse(args: argparse.Namespace) -> int:
    if args.action == "schema":
        return _schema(args)
    before = _details(args)
    answer = flush_destination(args.config, args.destination, args.wait)
    after = _details(args)
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


def _details(args: argparse.Namespace) -> dict[str, Any]:
    status = call_admin(args.config, "GET", "/status")
    destination = status["destinations"].get(args.destination)
    if destination is None:
        raise GatewayError(f"no running destination {args.destination!r}")
    details = destination.get("details")
    return details if isinstance(details, dict) else {}


def _schema(args: argparse.Namespace) -> int:
    details = describe_destination(args.config, args.destination).get("details") or {}
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
