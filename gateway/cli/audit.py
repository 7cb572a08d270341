"""``gateway audit``: prove from the log's books that every accepted message was delivered,
filtered, dead-lettered or is pending (read from the log, with the daemon up or down)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cli.arguments import time_argument
from gateway.cli.offline import read_log
from gateway.config import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    import argparse

    from gateway.cli.arguments import Commands


def add_commands(commands: Commands) -> None:
    audit = commands.add_parser(
        "audit", help="prove every accepted message is delivered, filtered, dead-lettered or pending"
    )
    audit.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    audit.add_argument("--since", help="ISO time: reconcile from each destination's position at that time")
    audit.set_defaults(handler=_audit)


def _audit(args: argparse.Namespace) -> int:
    from gateway.ops.audit import audit, format_report

    since_ms = time_argument("--since", args.since) if args.since else None
    report = audit(read_log(args.config, lambda reader: reader.books(since_ms)))
    print(format_report(report))
    return 0 if report.balanced else 3
