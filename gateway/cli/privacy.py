"""``gateway privacy``: suppress, unsuppress or delete a userId's events (admin API), list the
suppressions, or print the field inventory (read from the log, with the daemon up or down)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.cli.admin_api import call_admin
from gateway.cli.offline import read_log
from gateway.config import DEFAULT_CONFIG_PATH
from gateway.errors import GatewayError

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    privacy = commands.add_parser(
        "privacy",
        help="suppress or delete a userId's events (admin API), or print the field inventory (from the log file)",
    )
    privacy.add_argument("action", choices=("suppress", "unsuppress", "suppressions", "delete", "inventory"))
    privacy.add_argument("user_id", nargs="?", metavar="USER_ID")
    privacy.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    privacy.add_argument(
        "--keep-collecting", action="store_true", help="delete: do not suppress the user's later events"
    )
    privacy.add_argument("--source", help="inventory: only this source")
    privacy.set_defaults(handler=_privacy)


def _privacy(args: argparse.Namespace) -> int:
    if args.action == "suppressions":
        for user_id in call_admin(args.config, "GET", "/privacy/suppressions"):
            print(user_id)
        return 0
    if args.action == "inventory":
        return _inventory(args)
    if not args.user_id:
        raise GatewayError(f"privacy {args.action}: give the USER_ID")
    if args.action == "delete":
        return _delete(args)
    answer = call_admin(args.config, "POST", f"/privacy/{args.action}", {"userId": args.user_id})
    state = "suppressed" if answer["suppressed"] else "no longer suppressed"
    print(f"{args.user_id}: {state}" + ("" if answer["changed"] else " (already so)"))
    return 0


def _delete(args: argparse.Namespace) -> int:
    answer = call_admin(
        args.config,
        "POST",
        "/privacy/delete",
        {"userId": args.user_id, "keepCollecting": args.keep_collecting},
        timeout=600,  # a full scan of a large log, then every destination's own deletion
    )
    removed = answer["messages_deleted"] + answer["tombstoned"]
    parts = [f"{removed} messages removed from the log, {answer['dead_letters_deleted']} dead letters"]
    failed = False
    for did, result in sorted(answer["destinations"].items()):
        if result.get("error"):
            failed = True
            text = f"FAILED: {result['error']}"
        elif result.get("supported", True) is False:
            text = "no delete hook"
        else:
            text = f"{result.get('removed', 0)} removed"
        if result.get("settled", True) is False:
            text += " (batches read before the deletion were still in flight: run it again later)"
        parts.append(f"{did}: {text}")
    parts.append(
        "later events are dropped (suppressed)"
        if answer["suppressed"]
        else "later events are still collected (--keep-collecting)"
    )
    print(f"{args.user_id}: " + "; ".join(parts))
    return 1 if failed else 0


def _inventory(args: argparse.Namespace) -> int:
    everything = read_log(args.config, lambda reader: reader.load_inventory())
    rows = [row for row in everything if args.source in (None, row.source)]
    if not rows:
        print("no fields recorded yet (set inventory = true on a source)", file=sys.stderr)
        return 0

    def when(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    table = [(r.source, r.path, r.cls, ",".join(r.hits) or "-", when(r.first_seen), when(r.last_seen)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for source, path, cls, hits, first, last in table:
        cells = (source, path, cls, hits)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + f"  first {first}  last {last}")
    return 0
