"""The ``gateway`` command: run the daemon, check a config, list plugins, and operate a running
daemon (status, dead letters, privacy, replays, audit), one module per command group.

Each group's module adds its subcommands (``add_commands``) and handles them; the ones that act
on a running daemon call its admin API (``admin_api``), the ones that read stored data open the
log read-only (``offline``).

May import every other package of the gateway (it is the top layer, beside gateway.testing);
in the gateway, only ``gateway/__main__.py`` imports it (and the ``gateway`` console script runs it).
"""

from __future__ import annotations

import signal
import sys

if sys.argv[1:2] == ["run"]:
    # First, before the imports: SIGHUP's default action ends the process, and importing the
    # web stack and the plugins takes a second or more. A reload asked for meanwhile is moot
    # (the config is being read now): ignore it until the daemon's own receiver takes over.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse

from gateway.cli import audit, daemon, dead_letters, plugins, privacy, replay, status, warehouse
from gateway.errors import GatewayError, LogUnreadableError, exception_leaves

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Self-hosted Segment-compatible event gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    daemon.add_commands(commands)
    plugins.add_plugins_command(commands)
    status.add_commands(commands)
    warehouse.add_commands(commands)
    dead_letters.add_commands(commands)
    privacy.add_commands(commands)
    replay.add_commands(commands)
    audit.add_commands(commands)
    plugins.add_new_plugin_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; startup failures end with one line on stderr and a non-zero status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except (GatewayError, OSError, BaseExceptionGroup) as error:
        # Errors from inside the daemon's nurseries arrive wrapped in exception groups.
        leaves = exception_leaves(error)
        if not all(isinstance(leaf, GatewayError | OSError) for leaf in leaves):
            raise
        leaf = leaves[0]
        if isinstance(leaf, LogUnreadableError):  # a corrupt or foreign log file
            print(f"gateway: {leaf}", file=sys.stderr)
            return 1
        print(f"gateway: {leaf}", file=sys.stderr)
        return 2 if isinstance(leaf, GatewayError) else 1
