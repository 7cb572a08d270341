"""``gateway replay``: send a destination again what the log received in a time range, beside
its live delivery, or cancel its replays (admin API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.cli.admin_api import call_admin
from gateway.cli.arguments import time_argument
from gateway.config import DEFAULT_CONFIG_PATH
from gateway.errors import GatewayError

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    replay = commands.add_parser(
        "replay",
        help="send a destination again what the log received in a time range, beside live delivery (admin API)",
    )
    replay.add_argument("destination")
    replay.add_argument("--since", help="ISO time: the first messages received at or after it")
    replay.add_argument("--until", help="ISO time: up to the messages received before it (default: now)")
    replay.add_argument("--cancel", action="store_true", help="stop and forget the destination's replays")
    replay.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    replay.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    if args.cancel:
        cancelled = call_admin(args.config, "POST", "/replays/cancel", {"destination": args.destination})["cancelled"]
        print(f"{cancelled} replay(s) of {args.destination} cancelled")
        return 0
    if not args.since:
        raise GatewayError("replay: give --since (or --cancel)")
    body: dict[str, Any] = {"destination": args.destination, "since_ms": time_argument("--since", args.since)}
    if args.until:
        body["until_ms"] = time_argument("--until", args.until)
    answer = call_admin(args.config, "POST", "/replays", body)
    if answer["replay"] is None:
        print(f"nothing to replay: no stored message was received in that time for {args.destination}")
        return 0
    replay = answer["replay"]
    print(
        f"replaying up to {replay['end_seq'] - replay['start_seq']} messages (seq {replay['start_seq'] + 1}.."
        f"{replay['end_seq']}) to {args.destination} as {replay['name']}; `gateway status` shows its progress"
    )
    return 0
