"""The ``gateway`` command: run the daemon, check a config, list plugins, inspect dead letters."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.config import DEFAULT_CONFIG_PATH, load_config
from gateway.errors import GatewayError
from gateway.plugins import build_registry, make_plugin_manager, plugin_distribution
from gateway.telemetry import LEVELS, configure_logging


def _run(args: argparse.Namespace) -> int:
    from gateway.runtime import run

    configure_logging(args.log_level)
    run(args.config)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config, build_registry(make_plugin_manager()))
    print(
        f"{args.config}: ok ({len(config.sources)} sources, {len(config.destinations)} destinations, "
        f"{len(config.filters)} filters)"
    )
    return 0


def _plugins(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    registry = build_registry(pm)
    kinds: tuple[tuple[str, dict[str, Any]], ...] = (
        ("source", registry.sources),
        ("destination", registry.destinations),
        ("filter", registry.filters),
        ("matcher", registry.matchers),
    )
    for kind, types in kinds:
        for name, component_type in sorted(types.items()):
            plugin = registry.provided_by[(kind, name)]
            print(f"{kind:<12} {name:<16} {plugin_distribution(pm, plugin):<40} {component_type.description}")
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from gateway.log.sqlite import list_dead_letters

    config = load_config(args.config, build_registry(make_plugin_manager()))
    letters = list_dead_letters(config.data_dir, destination=args.destination, limit=args.limit)
    for letter in letters:
        when = datetime.fromtimestamp(letter.failed_at, UTC).isoformat(timespec="seconds")
        print(
            f"{letter.id}\t{letter.destination}\tseq={letter.seq}\t{when}\tattempts={letter.attempts}\t{letter.error}"
        )
        if args.bodies:
            print(f"\t{letter.body.decode('utf-8', 'replace')}")
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Self-hosted Segment-compatible event gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    run.add_argument("--log-level", default="info", choices=LEVELS)
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG_PATH)
    check.set_defaults(handler=_check_config)

    plugins = commands.add_parser("plugins", help="list the plugins and component types found")
    plugins.set_defaults(handler=_plugins)

    dead = commands.add_parser("dead-letters", help="inspect messages destinations refused")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    dead_list = dead_commands.add_parser("list", help="list dead letters, oldest first")
    dead_list.add_argument("--config", default=DEFAULT_CONFIG_PATH)
    dead_list.add_argument("--destination", help="only this destination")
    dead_list.add_argument("--limit", type=int, default=100)
    dead_list.add_argument("--bodies", action="store_true", help="print each message too")
    dead_list.set_defaults(handler=_dead_letters)
    return parser


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: list[str] | None = None) -> int:
    """Run a command; startup failures end with one line on stderr and a non-zero status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except (GatewayError, OSError, BaseExceptionGroup) as error:
        # Errors from inside the daemon's nurseries arrive wrapped in exception groups.
        leaves = _leaves(error)
        if not all(isinstance(leaf, GatewayError | OSError) for leaf in leaves):
            raise
        print(f"gateway: {leaves[0]}", file=sys.stderr)
        return 2 if isinstance(leaves[0], GatewayError) else 1


if __name__ == "__main__":
    sys.exit(main())
