"""``gateway dead-letters list|redrive|discard``: what destinations (and sources' filters)
refused, through the admin API."""

from __future__ import annotations

import argparse
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.cli.admin_api import call_admin
from gateway.config import DEFAULT_CONFIG_PATH
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    dead = commands.add_parser(
        "dead-letters", help="inspect, redrive or discard messages destinations refused (admin API)"
    )
    dead.add_argument("action", choices=("list", "redrive", "discard"))
    dead.add_argument("ids", nargs="*", type=int, help="dead letter ids (redrive/discard)")
    dead.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    dead.add_argument(
        "--destination", help="only this destination (list), or all of its dead letters (redrive/discard)"
    )
    dead.add_argument("--limit", type=_at_least_one, default=100, help="list at most this many (default 100)")
    dead.add_argument("--bodies", action="store_true", help="print each message too")
    dead.set_defaults(handler=_dead_letters)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _dead_letters(args: argparse.Namespace) -> int:
    if args.action == "list":
        query = urllib.parse.urlencode(
            {k: v for k, v in (("destination", args.destination), ("limit", args.limit)) if v}
        )
        for letter in call_admin(args.config, "GET", f"/dead-letters?{query}"):
            when = datetime.fromtimestamp(letter["failed_at"], UTC).isoformat(timespec="seconds")
            print(
                f"{letter['id']}\t{letter['destination']}\tseq={letter['seq']}\t{when}\t{letter['state']}"
                f"\tstage={letter['stage']}\tattempts={letter['attempts']}\t{letter['error']}"
            )
            if args.bodies:
                print(f"\t{letter['message']}")
        return 0
    if not args.ids and not args.destination:
        raise GatewayError(f"dead-letters {args.action}: name --destination or one or more ids")
    body = {"ids": args.ids} if args.ids else {"destination": args.destination}
    changed = call_admin(args.config, "POST", f"/dead-letters/{args.action}", body)["changed"]
    verb = "marked for redrive" if args.action == "redrive" else "discarded"
    print(f"{changed} dead letter(s) {verb}")
    return 0
